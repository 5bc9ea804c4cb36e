"""Test helpers: a small generic source table, specs written into tmp_path, target inspection."""
from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import sqlalchemy as sa

from syncrunner.dburl import create_engine
from syncrunner.runtime.engine import RunResult, run_spec
from syncrunner.runtime.strategy import RunOptions
from syncrunner.spec.load import load_spec

BASE_TS = dt.datetime(2025, 3, 1, 9, 0, 0)

item = sa.Table(
    "item", sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(100)),
    sa.Column("email", sa.String(100)),
    sa.Column("amount", sa.Numeric(12, 2)),
    sa.Column("seen_on", sa.String(30)),
    sa.Column("updated_at", sa.DateTime),
    sa.Index("ix_item_cursor", "updated_at", "id"),
)


def make_source(url: str, n: int, *, same_ts: bool = False, start_id: int = 1) -> sa.Engine:
    """n item rows a minute apart; same_ts puts them all on one updated_at (the keyset stress case)."""
    engine = create_engine(url)
    item.metadata.create_all(engine)
    rows = [dict(id=i, name=f"item {i}", email=f"user{i}@example.com", amount=i * 1.5,
                 seen_on="2025-01-02", updated_at=BASE_TS if same_ts else BASE_TS + dt.timedelta(minutes=i))
            for i in range(start_id, start_id + n)]
    with engine.begin() as c:
        for k in range(0, len(rows), 5000):
            c.execute(item.insert(), rows[k:k + 5000])
    return engine


ITEM_SPEC = """\
crm: testcrm
entity: {entity}
source:
  kind: sql
  url: ${{ITEM_DB_URL}}
  query: SELECT id, name, email, amount, seen_on, updated_at FROM item
  cursor: updated_at
  key: id
  timezone: America/New_York
  chunk_size: {chunk_size}
target:
  table: {table}
  key: [id]
  batch_size: {batch_size}
fields:
  id:         {{from: id, type: integer, required: true}}
  name:       {{from: name, type: string, required: true}}
  email:      {{from: email, type: string, validators: [email]}}
  amount:     {{from: amount, type: decimal, precision: 12, scale: 2}}
  seen_on:    {{from: seen_on, type: date}}
  updated_at: {{from: updated_at, type: datetime, required: true}}
"""


def write_spec(tmp_path: Path, *, chunk_size: int = 1000, batch_size: int = 500, text: str | None = None,
               name: str = "items.yaml", entity: str = "items", table: str | None = None,
               extra: str = "") -> Path:
    """The item spec; `extra` is YAML appended at the top level (e.g. a deletes: block)."""
    path = tmp_path / name
    if text is None:
        text = ITEM_SPEC.format(chunk_size=chunk_size, batch_size=batch_size, entity=entity,
                                table=table or entity) + extra
    path.write_text(text)
    return path


def sync(spec_path: Path, source_url: str, target_url: str, **opts) -> RunResult:
    """Run the item spec in-process; SyncRun's own keywords (observers, heartbeat_seconds,
    max_concurrent, source, map_workers, map_after, count_total) are passed to it, the rest are
    RunOptions."""
    engine_kw = {k: opts.pop(k) for k in ("observers", "heartbeat_seconds", "max_concurrent", "source",
                                          "map_workers", "map_after", "count_total") if k in opts}
    spec = load_spec(spec_path, {"ITEM_DB_URL": source_url})
    return run_spec(spec, RunOptions(**opts), target_url, **engine_kw)


def table_rows(url: str, table: str, cols: str = "id, name, email, amount, seen_on") -> list[tuple]:
    return [tuple(r) for r in rows(url, f"SELECT {cols} FROM {table} ORDER BY id")]


def cli_env(source_url: str, target_url: str, **extra: str) -> dict:
    """Environment for a `syncrunner` subprocess running the item spec."""
    import os
    env = dict(os.environ, ITEM_DB_URL=source_url, SYNCRUNNER_TARGET_URL=target_url)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def cli(*args: object, env: dict, timeout: float = 300) -> "subprocess.CompletedProcess[str]":
    """`syncrunner ARGS...` in a real subprocess (real signals, real process exit)."""
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "syncrunner.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def cli_start(*args: object, env: dict) -> "subprocess.Popen[str]":
    import subprocess
    import sys
    return subprocess.Popen([sys.executable, "-m", "syncrunner.cli", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def rows(url: str, sql: str, **params) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return c.execute(sa.text(sql), params).fetchall()
    finally:
        engine.dispose()


def history(url: str) -> list:
    return rows(url, "SELECT * FROM sync_history ORDER BY id")
