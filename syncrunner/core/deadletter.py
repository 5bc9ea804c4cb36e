"""A dead-letter entry as a plain dict: built where records are mapped (the run's process or a
mapping worker, which must not import SQLAlchemy) and written by runtime/history.py."""
from __future__ import annotations

import datetime as dt
from typing import Any

from syncrunner.core.codec import dumps


def dead_letter(run_id: int, crm: str, entity: str, key: Any, field: str | None, reason: str,
                raw: Any, action: str = "rejected") -> dict:
    return dict(run_id=run_id, crm_source=crm, sync_type=entity,
                record_key=None if key is None else str(key)[:255], field=field, action=action,
                reason=reason, raw_record=dumps(raw), created_at=dt.datetime.now(dt.timezone.utc))
