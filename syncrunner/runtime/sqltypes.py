"""Column types shared by every target dialect."""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.types import TypeDecorator

from ..redact import redact, redact_value

UTC = dt.timezone.utc


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in Python; TIMESTAMPTZ on PostgreSQL, naive UTC elsewhere."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONValue(TypeDecorator):
    """JSONB on PostgreSQL (comparable, so unchanged rows are detected); JSON elsewhere."""

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB())
        return dialect.type_descriptor(sa.JSON())


class RedactedText(TypeDecorator):
    """Text that can quote a request or a response (an error, a dead-letter reason or record):
    stored with every secret redacted (redact.py), whoever wrote it."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else redact(value)


class RedactedJSON(JSONValue):
    """JSONValue stored redacted (SyncHistory's configuration and performance metrics)."""

    def process_bind_param(self, value, dialect):
        return redact_value(value)


def column_type(field_type: str, *, max_length: int | None = None, precision: int = 18, scale: int = 4):
    """The SQLAlchemy type for a spec field type."""
    if field_type == "string":
        return sa.String(max_length) if max_length else sa.Text()
    return {
        "integer": sa.BigInteger(),
        "decimal": sa.Numeric(precision, scale),
        "boolean": sa.Boolean(),
        "date": sa.Date(),
        "datetime": UTCDateTime(),
        "json": JSONValue(),
    }[field_type]


def type_family(t: sa.types.TypeEngine) -> str:
    """Coarse family of a (reflected) column type, to detect type changes across dialects."""
    if isinstance(t, (UTCDateTime, sa.DateTime)):
        return "datetime"
    if isinstance(t, sa.Boolean) or (isinstance(t, mysql.TINYINT) and getattr(t, "display_width", None) == 1):
        return "boolean"
    if isinstance(t, sa.Date):
        return "date"
    if isinstance(t, sa.Integer):
        return "integer"
    if isinstance(t, (sa.Numeric, sa.Float)):
        return "decimal"
    if isinstance(t, (sa.JSON, JSONValue)):
        return "json"
    if isinstance(t, (sa.String, sa.Text)):
        return "string"
    return type(t).__name__.lower()
