"""The target database connection: where entity tables, SyncHistory and dead letters live."""
from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from syncrunner.dburl import create_engine, shared_engine

READ_ONLY = "sr_read_only"  # execution option: this connection only reads (see make_engine)


def shared_target_engine(url: str) -> sa.Engine:
    return shared_engine(url, make_engine)


def make_engine(url: str) -> sa.Engine:
    """An engine with working transactions and savepoints on every dialect."""
    u = sa.engine.make_url(url)
    if u.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _no_implicit_tx(dbapi_conn, _record):  # pysqlite's own BEGIN handling breaks SAVEPOINT
            dbapi_conn.isolation_level = None
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")

        @event.listens_for(engine, "begin")
        def _begin(conn):
            # IMMEDIATE: take the write lock up front, so concurrent runs (other entities, the
            # heartbeat) wait for it (busy timeout) instead of failing to upgrade a read snapshot.
            # A connection marked read_only only reads: a plain BEGIN never waits for a writer.
            read_only = conn.get_execution_options().get(READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


def target_exists(url: str) -> bool:
    """False for a SQLite file that is not there yet (connecting would create it)."""
    u = sa.engine.make_url(url)
    if u.get_backend_name() == "sqlite":
        db = u.database
        return bool(db) and db != ":memory:" and Path(db).exists()
    return True
