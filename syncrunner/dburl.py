"""Database URLs: driverless URLs get the drivers syncrunner ships with (psycopg2, pymysql), so
`postgresql://...` and `mysql://...` work as users write them."""
from __future__ import annotations

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
