"""The SyncHistory table (DESIGN.md §6) and the dead-letter table, in the target database.

Checkpoints are written on the caller's connection so they commit in the same transaction as the
chunk's data: after a crash, data and checkpoint agree. Error messages, dead-letter reasons and
records, configuration and metrics are stored redacted: their column types run redact.py."""
from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from syncrunner.core.redact import redact
from syncrunner.core.stats import Stats
from syncrunner.targets.sqltypes import JSONValue, RedactedJSON, RedactedText, UTCDateTime

STATUSES = ("queued", "running", "success", "partial", "failed", "skipped")
COMPLETED = ("success", "partial")
# rows that are not runs of data: a run waiting on the Celery queue (`syncrunner enqueue`), and one
# that never ran (its spec gated off by `enabled:`). Resume and the delta window look past them.
NOT_RUNS = ("queued", "skipped")

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
    sa.Column("error_message", RedactedText),
    sa.Column("performance_metrics", RedactedJSON),
    sa.Column("configuration", RedactedJSON),
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
    sa.Column("reason", RedactedText, nullable=False),
    sa.Column("raw_record", RedactedText),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_sync_dead_letters_source", "crm_source", "sync_type", "run_id"),
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def ensure_tables(conn: sa.Connection) -> None:
    metadata.create_all(conn, checkfirst=True)


def tables_exist(conn: sa.Connection) -> bool:
    return sa.inspect(conn).has_table("sync_history")


def start_run(conn: sa.Connection, crm: str, entity: str, configuration: dict,
              replaces: int | None = None) -> int:
    """Insert the run's `running` row. `replaces`: the `queued` row `syncrunner enqueue` wrote for
    this run; it is deleted in the same transaction (one row per run, ids in start order) and the
    run's configuration.queued names it. A queued row that is no longer queued (swept) is left."""
    now = utcnow()
    if replaces is not None:
        queued = take_queued(conn, replaces)
        if queued is not None:
            configuration = dict(configuration, queued=queued)
    result = conn.execute(sync_history.insert().values(
        crm_source=crm, sync_type=entity, status="running", start_time=now, heartbeat_at=now,
        records_processed=0, records_created=0, records_updated=0, records_failed=0,
        configuration=configuration, performance_metrics={}))
    return int(result.inserted_primary_key[0])


def add_queued(conn: sa.Connection, crm: str, entity: str, configuration: dict) -> int:
    """A run waiting on the queue: start_time is when it was queued; heartbeat_at stays empty."""
    result = conn.execute(sync_history.insert().values(
        crm_source=crm, sync_type=entity, status="queued", start_time=utcnow(),
        records_processed=0, records_created=0, records_updated=0, records_failed=0,
        configuration=configuration, performance_metrics={}))
    return int(result.inserted_primary_key[0])


def take_queued(conn: sa.Connection, run_id: int) -> dict | None:
    """Delete a `queued` row that a run now replaces; returns what the run records about it
    (None if the row is no longer queued)."""
    h = sync_history.c
    row = conn.execute(sa.select(sync_history).where(h.id == run_id, h.status == "queued")).first()
    if row is None or conn.execute(sync_history.delete().where(
            h.id == run_id, h.status == "queued")).rowcount != 1:
        return None
    cfg = row.configuration or {}
    return {"run_id": row.id, "queued_at": row.start_time.isoformat(), "task_id": cfg.get("task_id")}


def settle_queued(conn: sa.Connection, run_id: int, status: str, error: str | None) -> bool:
    """End a `queued` row whose run never started (its spec gated off: `skipped`; the entity
    already running: `skipped`; refused before its start: `failed`). False if it is not queued."""
    h = sync_history.c
    now = utcnow()
    done = conn.execute(sync_history.update().where(h.id == run_id, h.status == "queued").values(
        status=status, start_time=now, end_time=now, error_message=error))
    return done.rowcount == 1


def expired_queued(conn: sa.Connection, now: dt.datetime) -> list[sa.Row]:
    """`queued` rows whose task can no longer start: past its Celery expiry (workers discard an
    expired message), so the task vanished or was dropped."""
    h = sync_history.c
    rows = conn.execute(sa.select(sync_history).where(h.status == "queued").order_by(h.id)).fetchall()
    return [r for r in rows if queued_expired(r.configuration, now)]


def queued_expired(configuration: dict | None, now: dt.datetime) -> bool:
    expires = (configuration or {}).get("expires_at")
    return bool(expires) and dt.datetime.fromisoformat(expires) < now


def mark_vanished(conn: sa.Connection, row: sa.Row) -> bool:
    h = sync_history.c
    expires = (row.configuration or {}).get("expires_at")
    done = conn.execute(sync_history.update().where(h.id == row.id, h.status == "queued").values(
        status="failed", end_time=utcnow(),
        error_message=f"queued task vanished: not started before it expired at {expires}"))
    return done.rowcount == 1


class RunSwept(RuntimeError):
    """The run's SyncHistory row is no longer `running` (a sweep declared it dead): it must not
    commit anything more."""


def write_checkpoint(conn: sa.Connection, run_id: int, stats: Stats, watermark: str | None,
                     checkpoint: dict) -> None:
    """Only a `running` row takes a checkpoint: a run that was swept as dead (say its lock session
    vanished while it was cut off from the target) cannot commit a chunk behind its successor."""
    h = sync_history.c
    done = conn.execute(sync_history.update().where(h.id == run_id, h.status == "running").values(
        records_processed=stats.fetched, records_created=stats.created,
        records_updated=stats.updated, records_failed=stats.failed,
        watermark=watermark, checkpoint=checkpoint, heartbeat_at=utcnow()))
    if done.rowcount != 1:
        raise RunSwept(f"SyncHistory run {run_id} is no longer running (swept as dead); stopping")


def heartbeat(conn: sa.Connection, run_id: int, peak_memory_mb: float) -> None:
    """Stamp a live run; the full performance_metrics replace this at the end of the run."""
    h = sync_history.c
    conn.execute(sync_history.update().where(h.id == run_id, h.status == "running").values(
        heartbeat_at=utcnow(), performance_metrics={"peak_memory_mb": round(peak_memory_mb, 1)}))


def running_runs(conn: sa.Connection, crm: str | None = None, entity: str | None = None) -> list[sa.Row]:
    h = sync_history.c
    q = sa.select(sync_history).where(h.status == "running")
    if crm is not None:
        q = q.where(h.crm_source == crm, h.sync_type == entity)
    return conn.execute(q.order_by(h.id)).fetchall()


def mark_dead(conn: sa.Connection, row: sa.Row, why: str) -> bool:
    """Mark a `running` row failed with "heartbeat lost" (its checkpoint stays: the next run of
    the same window resumes from it). False if it finished meanwhile."""
    h = sync_history.c
    last = row.heartbeat_at.isoformat() if row.heartbeat_at else "never"
    metrics = dict(row.performance_metrics or {})
    metrics["swept"] = why
    done = conn.execute(sync_history.update().where(h.id == row.id, h.status == "running").values(
        status="failed", end_time=utcnow(), performance_metrics=metrics,
        error_message=f"heartbeat lost (last heartbeat {last}; {why})"))
    return done.rowcount == 1


def describe_holder(conn: sa.Connection, crm: str, entity: str) -> str:
    """" since <start> (pid P, host H)" for the live run of (crm, entity), for "already running"."""
    if not tables_exist(conn):
        return " (starting: no SyncHistory row yet)"
    runs = running_runs(conn, crm, entity)
    if not runs:
        return " (starting or waiting for a run slot: no SyncHistory row yet)"
    r = runs[-1]
    cfg = r.configuration or {}
    return f" since {r.start_time.isoformat()} (pid {cfg.get('pid')}, host {cfg.get('host')}; SyncHistory run {r.id})"


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
    """The latest run that finished (success or partial) over a window with no upper bound and
    with no run parameter narrowing its fetch: its watermark is where the next delta run starts."""
    h = sync_history.c
    rows = conn.execute(sa.select(sync_history).where(
        h.crm_source == crm, h.sync_type == entity, h.status.in_(COMPLETED)
    ).order_by(h.id.desc()).limit(20)).fetchall()
    for row in rows:
        window = (row.configuration or {}).get("window", {})
        if not window.get("until") and not (row.configuration or {}).get("narrowed_by"):
            return row
    return None


def run_row(conn: sa.Connection, run_id: int) -> sa.Row | None:
    return conn.execute(sa.select(sync_history).where(sync_history.c.id == run_id)).first()


def latest_run(conn: sa.Connection, crm: str, entity: str) -> sa.Row | None:
    h = sync_history.c
    return conn.execute(sa.select(sync_history).where(
        h.crm_source == crm, h.sync_type == entity, h.status.not_in(NOT_RUNS)
    ).order_by(h.id.desc()).limit(1)).first()


def add_dead_letters(conn: sa.Connection, rows: list[dict]) -> int:
    """Keep the chunk's dead letters. One identical to an entry already kept (same record key, action,
    field, reason and raw record: an unchanged bad record re-read, e.g. inside a lookback window or by
    a --full run) is not kept twice; a record without a key is matched by its raw record alone.
    Returns how many *rejections* were such repeats (they are not new failures)."""
    if not rows:
        return 0
    d = dead_letters.c
    known: set[tuple] = set()
    keys = sorted({r["record_key"] for r in rows if r["record_key"] is not None})
    raws = sorted({r["raw_record"] for r in rows if r["record_key"] is None})
    for column, values, step in ((d.record_key, keys, 500), (d.raw_record, raws, 50)):
        for i in range(0, len(values), step):
            match = column.in_(values[i:i + step])
            if column is d.raw_record:
                match = sa.and_(d.record_key.is_(None), match)
            known.update(tuple(r) for r in conn.execute(
                sa.select(d.record_key, d.action, d.field, d.reason, d.raw_record).where(
                    d.crm_source == rows[0]["crm_source"], d.sync_type == rows[0]["sync_type"], match)))

    def ident(r: dict) -> tuple:  # as stored: reason and raw record redacted
        return r["record_key"], r["action"], r["field"], redact(r["reason"]), redact(r["raw_record"])

    fresh = [r for r in rows if ident(r) not in known]
    if fresh:
        conn.execute(dead_letters.insert(), fresh)
    return sum(1 for r in rows if r["action"] == "rejected" and ident(r) in known)


def sweep_stale(engine: sa.Engine, stale_after: dt.timedelta, *, crm: str | None = None,
                entity: str | None = None, lock_held: bool = False) -> tuple[list[sa.Row], list[sa.Row]]:
    """Mark dead `running` runs failed; returns (swept, skipped).

    A run is dead when its heartbeat is older than `stale_after` and nobody holds its entity lock
    (a hung process still holding it is reported, not swept). `lock_held`: the caller holds
    (crm, entity)'s lock, so every `running` row of that entity is dead whatever its age."""
    from syncrunner.runtime.locks import entity_lock_free  # locks knows nothing of history; keep it that way

    with engine.connect() as conn:
        if not tables_exist(conn):
            return [], []
        candidates = running_runs(conn, crm, entity)
    now = utcnow()
    swept, skipped = [], []
    for row in candidates:
        if lock_held:
            why = "no live process held its lock"
        else:
            if row.heartbeat_at is not None and now - row.heartbeat_at < stale_after:
                continue
            if not entity_lock_free(engine, row.crm_source, row.sync_type):
                skipped.append(row)
                continue
            why = f"no heartbeat for over {stale_after}"
        with engine.begin() as conn:
            if mark_dead(conn, row, why):
                swept.append(row)
    return swept, skipped


def sweep_vanished(engine: sa.Engine) -> list[sa.Row]:
    """Mark `queued` rows whose task can no longer start (past its expiry) failed; returns them."""
    with engine.connect() as conn:
        if not tables_exist(conn):
            return []
        candidates = expired_queued(conn, utcnow())
    swept = []
    for row in candidates:
        with engine.begin() as conn:
            if mark_vanished(conn, row):
                swept.append(row)
    return swept


def delete_queued(conn: sa.Connection, run_ids: list[int]) -> None:
    """Take back `queued` rows whose task never reached the broker (nothing is left half-queued)."""
    h = sync_history.c
    if run_ids:
        conn.execute(sync_history.delete().where(h.id.in_(run_ids), h.status == "queued"))
