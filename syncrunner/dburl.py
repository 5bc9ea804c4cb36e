"""Database URLs: driverless URLs get the drivers syncrunner ships with (psycopg2, pymysql), so
`postgresql://...` and `mysql://...` work as users write them."""
from __future__ import annotations

import atexit
import threading
from typing import Callable

import sqlalchemy as sa

_DEFAULT_DRIVERS = {"postgresql": "psycopg2", "postgres": "psycopg2", "mysql": "pymysql", "mariadb": "pymysql"}


def normalize_url(url: str) -> sa.URL:
    u = sa.engine.make_url(url)
    if u.drivername == "postgres":
        u = u.set(drivername="postgresql")
    if "+" not in u.drivername and u.drivername in _DEFAULT_DRIVERS:
        u = u.set(drivername=f"{u.drivername}+{_DEFAULT_DRIVERS[u.drivername]}")
    if u.get_backend_name() in ("mysql", "mariadb") and "charset" not in u.query:
        u = u.update_query_dict({"charset": "utf8mb4"})
    return u


def create_engine(url: str, **kwargs) -> sa.Engine:
    return sa.create_engine(normalize_url(url), **kwargs)


_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()


def shared_engine(url: str, factory: Callable[[str], sa.Engine] | None = None) -> sa.Engine:
    """One pooled engine per URL for the whole process: a folder of 20 specs (or a Celery worker)
    connects once per database, not once per entity."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = (factory or (lambda u: create_engine(u, pool_pre_ping=True)))(url)
            _engines[url] = engine
        return engine


@atexit.register
def dispose_all() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
