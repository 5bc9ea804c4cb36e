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


def url_problem(url: str) -> str | None:
    """Why `url` cannot name a database (not a URL, an unknown kind, a driver not installed), or
    None. Checked before a command touches anything."""
    try:
        dialect = normalize_url(url).get_dialect()
    except sa.exc.NoSuchModuleError:  # a subclass of ArgumentError
        return "names a kind of database SQLAlchemy does not know"
    except sa.exc.ArgumentError:
        return "is not a database URL (e.g. postgresql://user@host/db, mysql://user@host/db, sqlite:///file.db)"
    try:
        dialect.import_dbapi()
    except ImportError as e:
        return f"needs a database driver that is not installed ({e})"
    return None


_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def create_engine(url: str, **kwargs) -> sa.Engine:
    u = normalize_url(url)
    if _plain_loopback_pymysql(u, kwargs.get("connect_args", {})):
        # PyMySQL 1.2 tries TLS on every connection unless told otherwise ("preferred"), and
        # building its default context (the system CA store) cost 40-70 ms of CPU per connection
        # here, for a link that never leaves the machine. Any ssl setting in the URL or the
        # connect arguments keeps PyMySQL's own behaviour.
        kwargs["connect_args"] = {**kwargs.get("connect_args", {}), "ssl_disabled": True}
    return sa.create_engine(u, **kwargs)


def _plain_loopback_pymysql(u: sa.URL, connect_args: dict) -> bool:
    return (u.get_driver_name() == "pymysql" and (u.host or "localhost") in _LOOPBACK
            and not any(k.startswith("ssl") for k in (*u.query, *connect_args)))


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
