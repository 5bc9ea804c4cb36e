"""Fixtures for real database servers: every test database has a unique name and is dropped after.

PostgreSQL: 127.0.0.1:5432 user postgres (trust); MariaDB: 127.0.0.1:3306 root, empty password.
Override with SYNCRUNNER_TEST_PG / SYNCRUNNER_TEST_MYSQL (server URLs without a database)."""
from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from syncrunner.dburl import dispose_all

PG_SERVER = os.environ.get("SYNCRUNNER_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
MYSQL_SERVER = os.environ.get("SYNCRUNNER_TEST_MYSQL", "mysql+pymysql://root:@127.0.0.1:3306")


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _database(admin_url: str, create: str, drop: str, url: str):
    """Create a uniquely named database, yield its URL, drop it (and every pooled connection)."""
    name = _unique("srtest")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(create.format(name=name)))
    yield url.format(name=name)
    dispose_all()  # engines syncrunner shares per URL would keep connections to the dropped database
    with admin.connect() as c:
        c.execute(sa.text(drop.format(name=name)))
    admin.dispose()


@pytest.fixture
def pg_url():
    yield from _database(f"{PG_SERVER}/postgres", 'CREATE DATABASE "{name}"',
                         'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f"{PG_SERVER}/{{name}}")


def _mysql_database():
    return _database(f"{MYSQL_SERVER}/", "CREATE DATABASE `{name}` CHARACTER SET utf8mb4",
                     "DROP DATABASE IF EXISTS `{name}`", f"{MYSQL_SERVER}/{{name}}?charset=utf8mb4")


@pytest.fixture
def mysql_url():
    yield from _mysql_database()


@pytest.fixture
def mysql_target_url():
    """A second MariaDB database, so a MariaDB target never shares the source's."""
    yield from _mysql_database()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'target.db'}"


@pytest.fixture(params=["postgresql", "sqlite", "mysql"])
def target_url(request):
    """A fresh empty target database of each supported kind."""
    fixture = {"postgresql": "pg_url", "sqlite": "sqlite_url", "mysql": "mysql_target_url"}[request.param]
    return request.getfixturevalue(fixture)
