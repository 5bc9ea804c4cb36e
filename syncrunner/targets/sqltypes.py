"""Column types shared by every target dialect."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.types import TypeDecorator

from syncrunner.core.redact import redact, redact_value

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


class ExactDecimal(sa.Numeric):
    """DECIMAL(p, s) on PostgreSQL and MySQL. SQLite has no exact decimal: a NUMERIC column stores
    most values as REAL (8-byte float), so sums drift. There the column is declared DECIMAL_TEXT
    (TEXT affinity) and holds the value's fixed-point text with exactly `scale` digits
    ('12.50', '-0.07'): read back through syncrunner it is the same Decimal, and equal values have
    equal text, so the merge's "differs" comparison stays exact."""

    cache_ok = True

    def __init__(self, precision: int = 18, scale: int = 4):
        super().__init__(precision, scale, asdecimal=True)

    def bind_processor(self, dialect):
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        quantum = Decimal(1).scaleb(-(self.scale or 0))

        def text(v):
            if v is None:
                return None
            d = (v if isinstance(v, Decimal) else Decimal(str(v))).quantize(quantum)
            return format(d.copy_abs() if d.is_zero() else d, "f")  # no '-0.00', no exponent
        return text

    def result_processor(self, dialect, coltype):
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        # text from this type; REAL or INTEGER from a NUMERIC column an older version created
        return lambda v: None if v is None else Decimal(v if isinstance(v, str) else repr(v))


@compiles(ExactDecimal, "sqlite")
def _sqlite_decimal(type_, compiler, **kw) -> str:
    return "DECIMAL_TEXT"  # contains TEXT and not INT: SQLite gives the column TEXT affinity


class TimeOfDay(TypeDecorator):
    """A time of day without zone: TIME on PostgreSQL, TIME(6) on MySQL (whose driver returns a
    timedelta; SQLAlchemy turns it back into a time), and on SQLite the zero-padded, sortable text
    'HH:MM:SS.ffffff' (SQLAlchemy's SQLite TIME)."""

    impl = sa.Time
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.TIME(fsp=6))
        return dialect.type_descriptor(sa.Time())


def column_type(field_type: str, *, max_length: int | None = None, precision: int = 18, scale: int = 4):
    """The SQLAlchemy type for a spec field type."""
    if field_type == "string":
        return sa.String(max_length) if max_length else sa.Text()
    return {
        "integer": sa.BigInteger(),
        "decimal": ExactDecimal(precision, scale),
        "boolean": sa.Boolean(),
        "date": sa.Date(),
        "datetime": UTCDateTime(),
        "time": TimeOfDay(),
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
    if isinstance(t, (sa.Time, TimeOfDay)):
        return "time"
    if isinstance(t, sa.Integer):
        return "integer"
    if isinstance(t, (sa.Numeric, sa.Float)):
        return "decimal"
    if isinstance(t, (sa.JSON, JSONValue)):
        return "json"
    if isinstance(t, (sa.String, sa.Text)):
        return "string"
    return type(t).__name__.lower()
