"""Reading SyncHistory rows back for `history` and `health`: one typed view of a run, so both
commands (and their JSON) agree on what duration, rate and window mean."""
from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import sqlalchemy as sa

from syncrunner.core.redact import redact
from syncrunner.runtime import history as h
from syncrunner.runtime.target import make_engine, target_exists


class NoHistory(Exception):
    """The target has no SyncHistory yet (nothing ever ran against it)."""


@dataclass
class RunView:
    id: int
    crm: str
    entity: str
    status: str
    start_time: dt.datetime
    end_time: dt.datetime | None
    heartbeat_at: dt.datetime | None
    window_mode: str | None
    window_since: str | None
    window_until: str | None
    processed: int
    created: int
    updated: int
    failed: int
    duration_seconds: float | None
    records_per_second: float | None
    watermark: str | None
    error: str | None
    configuration: dict | None = None

    def as_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("configuration")
        for k in ("start_time", "end_time", "heartbeat_at"):
            doc[k] = doc[k].isoformat() if doc[k] else None
        return doc

    @property
    def source(self) -> str:
        return f"{self.crm}.{self.entity}"

    @property
    def window_text(self) -> str:
        if self.window_mode is None:
            return ""
        if not self.window_since and not self.window_until:
            return self.window_mode
        return f"{self.window_mode} {_short_ts(self.window_since) or '...'}..{_short_ts(self.window_until) or ''}"



def _short_ts(text: str | None) -> str | None:
    """`2025-03-01T14:00:00+00:00` -> `2025-03-01 14:00` for tables (JSON keeps the full value)."""
    if not text:
        return text
    return text.replace("T", " ")[:16]


def _view(row: sa.Row) -> RunView:
    config = row.configuration or {}
    window = config.get("window") or {}
    metrics = row.performance_metrics or {}
    duration = metrics.get("duration_seconds")
    if duration is None and row.end_time is not None:
        duration = (row.end_time - row.start_time).total_seconds()
    rate = metrics.get("records_per_second")
    if rate is None and duration:
        rate = round(row.records_processed / duration, 1)
    return RunView(
        id=row.id, crm=row.crm_source, entity=row.sync_type, status=row.status,
        start_time=row.start_time, end_time=row.end_time, heartbeat_at=row.heartbeat_at,
        window_mode=window.get("mode"), window_since=window.get("since"), window_until=window.get("until"),
        processed=row.records_processed or 0, created=row.records_created or 0,
        updated=row.records_updated or 0, failed=row.records_failed or 0,
        duration_seconds=duration, records_per_second=rate, watermark=row.watermark,
        error=redact(row.error_message) if row.error_message else None, configuration=config)


@contextmanager
def history_connection(target_url: str) -> Iterator[sa.Connection]:
    """A connection to a target that has SyncHistory; NoHistory when it has none (nothing is created)."""
    if not target_exists(target_url):
        raise NoHistory()
    engine = make_engine(target_url)
    try:
        with engine.connect() as conn:
            if not h.tables_exist(conn):
                raise NoHistory()
            yield conn
    finally:
        engine.dispose()


def load_runs(target_url: str, *, crm: str | None = None, entity: str | None = None,
              status: str | None = None, started_after: dt.datetime | None = None,
              limit: int | None = None) -> list[RunView]:
    """Runs newest first. Raises NoHistory when the target has no sync_history table."""
    with history_connection(target_url) as conn:
        c = h.sync_history.c
        q = sa.select(h.sync_history).order_by(c.start_time.desc(), c.id.desc())
        if crm:
            q = q.where(c.crm_source == crm)
        if entity:
            q = q.where(c.sync_type == entity)
        if status:
            q = q.where(c.status == status)
        if started_after is not None:
            q = q.where(c.start_time >= started_after)
        if limit:
            q = q.limit(limit)
        return [_view(r) for r in conn.execute(q)]


def split_entity(crm: str | None, entity: str | None) -> tuple[str | None, str | None]:
    """`--entity genius.appointments` is accepted as well as `--crm genius --entity appointments`."""
    if entity and "." in entity:
        e_crm, entity = entity.split(".", 1)
        crm = crm or e_crm
    return crm, entity


def age_text(seconds: float | None) -> str:
    """Human age: 45s, 12m, 5.2h, 3.1d."""
    if seconds is None:
        return "never"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def last_ended(target_url: str, statuses: tuple[str, ...], *, crm: str | None = None,
               entity: str | None = None) -> dict[tuple[str, str], dt.datetime]:
    """(crm, entity) -> end time of the latest run with one of `statuses`, however old: one grouped
    query, so health stays cheap on a table with years of runs."""
    with history_connection(target_url) as conn:
        c = h.sync_history.c
        q = (sa.select(c.crm_source, c.sync_type, sa.func.max(c.end_time).label("ended"))
             .where(c.status.in_(statuses), c.end_time.is_not(None))
             .group_by(c.crm_source, c.sync_type))
        if crm:
            q = q.where(c.crm_source == crm)
        if entity:
            q = q.where(c.sync_type == entity)
        # max() keeps the column's type, so values come back as aware UTC datetimes
        return {(r.crm_source, r.sync_type): r.ended for r in conn.execute(q)}
