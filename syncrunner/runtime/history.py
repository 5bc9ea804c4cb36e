"""The SyncHistory table (DESIGN.md §6) and the dead-letter table, in the target database.

Checkpoints are written on the caller's connection so they commit in the same transaction as the
chunk's data: after a crash, data and checkpoint agree."""
from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from .sqltypes import JSONValue, UTCDateTime, dumps
from .stats import Stats

STATUSES = ("running", "success", "partial", "failed")
COMPLETED = ("success", "partial")

metadata = sa.MetaData()

sync_history = sa.Table(
    "sync_history", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("crm_source", sa.String(50), nullable=False),
    sa.Column("sync_type", sa.String(50), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("start_time", UTCDateTime, nullable=False),
    sa.Column("end_time", UTCDateTime),
    sa.Column("records_processed", sa.Integer, nullable=False, default=0),
    sa.Column("records_created", sa.Integer, nullable=False, default=0),
    sa.Column("records_updated", sa.Integer, nullable=False, default=0),
    sa.Column("records_failed", sa.Integer, nullable=False, default=0),
    sa.Column("error_message", sa.Text),
    sa.Column("performance_metrics", JSONValue),
    sa.Column("configuration", JSONValue),
    # added by syncrunner
    sa.Column("watermark", sa.String(64)),
    sa.Column("heartbeat_at", UTCDateTime),
    sa.Column("checkpoint", JSONValue),
    sa.Index("ix_sync_history_source", "crm_source", "sync_type", "start_time"),
)

dead_letters = sa.Table(
    "sync_dead_letters", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, nullable=False),
    sa.Column("crm_source", sa.String(50), nullable=False),
    sa.Column("sync_type", sa.String(50), nullable=False),
    sa.Column("record_key", sa.String(255)),
    sa.Column("field", sa.String(100)),
    # rejected: the record was skipped; nulled: it landed with this field NULL (on_invalid: null)
    sa.Column("action", sa.String(10), nullable=False, default="rejected"),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("raw_record", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_sync_dead_letters_source", "crm_source", "sync_type", "run_id"),
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def ensure_tables(conn: sa.Connection) -> None:
    metadata.create_all(conn, checkfirst=True)


def tables_exist(conn: sa.Connection) -> bool:
    return sa.inspect(conn).has_table("sync_history")


def start_run(conn: sa.Connection, crm: str, entity: str, configuration: dict) -> int:
    now = utcnow()
    result = conn.execute(sync_history.insert().values(
        crm_source=crm, sync_type=entity, status="running", start_time=now, heartbeat_at=now,
        records_processed=0, records_created=0, records_updated=0, records_failed=0,
        configuration=configuration, performance_metrics={}))
    return int(result.inserted_primary_key[0])


def write_checkpoint(conn: sa.Connection, run_id: int, stats: Stats, watermark: str | None,
                     checkpoint: dict) -> None:
    conn.execute(sync_history.update().where(sync_history.c.id == run_id).values(
        records_processed=stats.fetched, records_created=stats.created,
        records_updated=stats.updated, records_failed=stats.failed,
        watermark=watermark, checkpoint=checkpoint, heartbeat_at=utcnow()))


def finish_run(conn: sa.Connection, run_id: int, status: str, stats: Stats, *, error: str | None,
               metrics: dict, watermark: str | None = None) -> None:
    assert status in STATUSES
    values: dict[str, Any] = dict(
        status=status, end_time=utcnow(), error_message=error, performance_metrics=metrics,
        records_processed=stats.fetched, records_created=stats.created,
        records_updated=stats.updated, records_failed=stats.failed, heartbeat_at=utcnow())
    if watermark is not None:
        values["watermark"] = watermark
    conn.execute(sync_history.update().where(sync_history.c.id == run_id).values(**values))


def last_completed(conn: sa.Connection, crm: str, entity: str) -> sa.Row | None:
    """The latest run that finished (success or partial) over a window with no upper bound: its
    watermark is where the next delta run starts."""
    h = sync_history.c
    rows = conn.execute(sa.select(sync_history).where(
        h.crm_source == crm, h.sync_type == entity, h.status.in_(COMPLETED)
    ).order_by(h.id.desc()).limit(20)).fetchall()
    for row in rows:
        window = (row.configuration or {}).get("window", {})
        if not window.get("until"):
            return row
    return None


def latest_run(conn: sa.Connection, crm: str, entity: str) -> sa.Row | None:
    h = sync_history.c
    return conn.execute(sa.select(sync_history).where(
        h.crm_source == crm, h.sync_type == entity).order_by(h.id.desc()).limit(1)).first()


def add_dead_letters(conn: sa.Connection, rows: list[dict]) -> None:
    if rows:
        conn.execute(dead_letters.insert(), rows)


def dead_letter(run_id: int, crm: str, entity: str, key: Any, field: str | None, reason: str,
                raw: Any, action: str = "rejected") -> dict:
    return dict(run_id=run_id, crm_source=crm, sync_type=entity,
                record_key=None if key is None else str(key)[:255], field=field, action=action,
                reason=reason, raw_record=dumps(raw), created_at=utcnow())
