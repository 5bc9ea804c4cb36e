"""Target dialects by SQLAlchemy dialect name, each imported only when a run writes to it."""
from __future__ import annotations

from importlib import import_module

import sqlalchemy as sa

from syncrunner.targets.base import TargetDialect

DIALECTS = {
    "postgresql": ("syncrunner.targets.postgresql", "PostgresTarget"),
    "sqlite": ("syncrunner.targets.sqlite", "SqliteTarget"),
    "mysql": ("syncrunner.targets.mysql", "MysqlTarget"),
    "mariadb": ("syncrunner.targets.mysql", "MysqlTarget"),
}


def dialect_for(engine: sa.Engine) -> TargetDialect:
    try:
        module, name = DIALECTS[engine.dialect.name]
    except KeyError:
        raise ValueError(f"unsupported target database {engine.dialect.name!r} "
                         "(use postgresql, sqlite or mysql)") from None
    return getattr(import_module(module), name)(engine)
