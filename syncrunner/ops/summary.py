"""`syncrunner run --json`: one machine-readable summary of a run, one object per entity, on stdout.

Logs and progress stay on stderr, so `syncrunner run --json specs/ > run.json` is clean JSON."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from syncrunner.core.redact import redact


def result_json(r) -> dict[str, Any]:
    """One RunResult (runtime/runstate.py) as plain JSON types; the error is redacted."""
    s = r.stats
    window = r.window.as_config() | {"reason": r.window.reason} if r.window is not None else None
    return {
        "entity": r.spec.name,
        "crm": r.spec.crm,
        "sync_type": r.spec.entity,
        "spec": r.spec.path,
        "status": r.status,
        "run_id": r.run_id,
        "window": window,
        "records": {"processed": s.fetched, "created": s.created, "updated": s.updated,
                    "unchanged": s.unchanged, "stale": s.stale, "failed": s.failed,
                    "nulled_values": s.warnings, "duplicates": s.duplicates},
        "chunks": s.chunks,
        "seconds": round(r.seconds, 3),
        "records_per_second": round(s.fetched / r.seconds, 1) if r.seconds > 0 else None,
        "watermark": r.watermark,
        "error": redact(r.error) if r.error else None,
        "notes": list(r.notes),
    }


def run_json(results: list, exit_code: int) -> str:
    doc = {
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "exit_code": exit_code,
        "ok": exit_code == 0,
        "entities": [result_json(r) for r in results],
    }
    return json.dumps(doc, indent=2, default=str)
