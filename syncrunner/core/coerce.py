"""Type coercion of source values to the spec's field types. A value that cannot be coerced raises
DataError: the record is a data error (dead letter), never garbage in the target."""
from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from typing import Any, Callable
from zoneinfo import ZoneInfo

UTC = dt.timezone.utc
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}
_INT = re.compile(r"[+-]?\d+")


class DataError(ValueError):
    """A record-level data problem: which field, what value, why."""

    def __init__(self, field: str | None, reason: str, value: Any = None):
        self.field = field
        self.reason = reason
        self.value = value
        super().__init__(f"{field}: {reason}" if field else reason)


def _zero_date(s: str) -> bool:
    return s.startswith("0000-00-00")


def to_string(v: Any) -> str:
    if isinstance(v, dt.timedelta):  # a MySQL TIME read into a string field: zero-padded, sortable
        return _timedelta_text(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


def to_integer(v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, (float, decimal.Decimal)):
        if v != int(v):
            raise ValueError(f"{v!r} is not a whole number")
        return int(v)
    s = str(v).strip().replace(",", "")
    if _INT.fullmatch(s):
        return int(s)
    try:
        d = decimal.Decimal(s)
    except decimal.InvalidOperation:
        raise ValueError(f"{v!r} is not an integer") from None
    if d != d.to_integral_value():
        raise ValueError(f"{v!r} is not a whole number")
    return int(d)


def make_decimal(precision: int, scale: int) -> Callable[[Any], decimal.Decimal]:
    quantum = decimal.Decimal(1).scaleb(-scale)
    limit = decimal.Decimal(10) ** (precision - scale)

    def to_decimal(v: Any) -> decimal.Decimal:
        if isinstance(v, bool):
            raise ValueError(f"{v!r} is not a number")
        try:
            d = v if isinstance(v, decimal.Decimal) else decimal.Decimal(str(v).strip().replace(",", ""))
        except decimal.InvalidOperation:
            raise ValueError(f"{v!r} is not a number") from None
        if not d.is_finite():
            raise ValueError(f"{v!r} is not a finite number")
        d = d.quantize(quantum, rounding=decimal.ROUND_HALF_EVEN)
        if abs(d) >= limit:
            raise ValueError(f"{v!r} does not fit DECIMAL({precision},{scale})")
        return d

    return to_decimal


def to_boolean(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, decimal.Decimal)) and v in (0, 1):
        return bool(v)
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(f"{v!r} is not a boolean")


def to_date(v: Any) -> dt.date:
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    s = str(v).strip()
    if _zero_date(s):
        raise ValueError(f"zero date {s!r}")
    try:
        return dt.date.fromisoformat(s[:10])
    except ValueError:
        raise ValueError(f"{v!r} is not a date (YYYY-MM-DD)") from None


_TIME = re.compile(r"(-)?(\d{1,3}):(\d{2})(?::(\d{2})(\.\d{1,6})?)?")
_DAY = dt.timedelta(days=1)


def _timedelta_text(v: dt.timedelta) -> str:
    """A MySQL TIME (a timedelta, maybe negative or beyond 24 h) as `[-]HH:MM:SS[.ffffff]`."""
    sign, v = ("-", -v) if v < dt.timedelta(0) else ("", v)
    hours, rest = divmod(v, dt.timedelta(hours=1))
    minutes, rest = divmod(rest, dt.timedelta(minutes=1))
    frac = f".{rest.microseconds:06d}" if rest.microseconds else ""
    return f"{sign}{hours:02d}:{minutes:02d}:{rest.seconds:02d}{frac}"


def to_time(v: Any) -> dt.time:
    """A time of day, 00:00:00 <= t < 24:00:00, without a zone. MySQL TIME arrives as a timedelta
    and may be negative or beyond 24 h (an elapsed time, not a time of day): that is a bad value."""
    if isinstance(v, dt.datetime):
        raise ValueError(f"{v!r} is a date-time, not a time of day")
    if isinstance(v, dt.time):
        if v.tzinfo is not None:
            raise ValueError(f"{v.isoformat()!r} has a zone offset: use a datetime field")
        return v
    if isinstance(v, dt.timedelta):
        td = v
    else:
        m = _TIME.fullmatch(str(v).strip())
        if not m:
            raise ValueError(f"{v!r} is not a time of day (HH:MM[:SS[.ffffff]])")
        sign, h, mi, s, frac = m.groups()
        if int(mi) > 59 or int(s or 0) > 59:
            raise ValueError(f"{v!r} is not a time of day (HH:MM[:SS[.ffffff]])")
        td = dt.timedelta(hours=int(h), minutes=int(mi), seconds=int(s or 0),
                          microseconds=int((frac or ".0")[1:].ljust(6, "0")))
        td = -td if sign else td
    if not dt.timedelta(0) <= td < _DAY:
        raise ValueError(f"{_timedelta_text(td)!r} is outside 00:00:00-23:59:59.999999 (not a time of day)")
    return (dt.datetime.min + td).time()


class DayOffsets(dict):
    """Proleptic ordinal of a local day -> its one UTC offset, or None when the zone's offset
    changes during that day (or the day has a repeated or skipped hour). Filled as days are seen:
    `(naive - offset).replace(tzinfo=UTC)` is then exactly `naive.replace(tzinfo=tz).astimezone(UTC)`
    at a third of ZoneInfo's cost, the hot path of every naive source timestamp."""

    LIMIT = 200_000

    def __init__(self, tz: ZoneInfo):
        super().__init__()
        self.tz = tz

    def learn(self, d: dt.datetime) -> None:
        day = d.toordinal()
        if day in self or len(self) >= self.LIMIT:
            return
        first = dt.datetime.combine(d.date(), dt.time())
        last = first + dt.timedelta(days=1, microseconds=-1)
        offsets = {self.tz.utcoffset(t.replace(fold=f)) for t in (first, last) for f in (0, 1)}
        self[day] = offsets.pop() if len(offsets) == 1 else None


def make_datetime(tz_name: str, offsets: DayOffsets | None = None) -> Callable[[Any], dt.datetime]:
    """Naive values are in the source zone; every result is an aware UTC datetime. With `offsets`,
    each naive value's day is recorded there for the compiled mapping's fast path."""
    tz = ZoneInfo(tz_name)

    def to_datetime(v: Any) -> dt.datetime:
        if isinstance(v, dt.datetime):
            d = v
        elif isinstance(v, dt.date):
            d = dt.datetime.combine(v, dt.time())
        elif isinstance(v, (int, float, decimal.Decimal)) and not isinstance(v, bool):
            return _epoch(float(v))
        else:
            s = str(v).strip()
            if _zero_date(s):
                raise ValueError(f"zero date {s!r}")
            if _INT.fullmatch(s):
                return _epoch(float(s))
            try:
                d = dt.datetime.fromisoformat(s)
            except ValueError:
                raise ValueError(f"{v!r} is not a date-time (ISO 8601)") from None
        if d.tzinfo is None:
            if offsets is not None:
                offsets.learn(d)
            d = d.replace(tzinfo=tz)
        return d.astimezone(UTC)

    return to_datetime


def _epoch(x: float) -> dt.datetime:
    if abs(x) > 1e11:  # milliseconds, as HubSpot sends them
        x /= 1000.0
    return dt.datetime.fromtimestamp(x, tz=UTC)


def to_json(v: Any) -> Any:
    if isinstance(v, (dict, list, int, float, bool)):
        return v
    if isinstance(v, (bytes, str)):
        try:
            return json.loads(v)
        except ValueError:
            raise ValueError("not valid JSON") from None
    raise ValueError(f"{type(v).__name__} is not JSON")


def coercer(type_name: str, *, tz: str = "UTC", precision: int = 18, scale: int = 4,
            offsets: DayOffsets | None = None) -> Callable[[Any], Any]:
    return {
        "string": lambda: to_string,
        "integer": lambda: to_integer,
        "decimal": lambda: make_decimal(precision, scale),
        "boolean": lambda: to_boolean,
        "date": lambda: to_date,
        "datetime": lambda: make_datetime(tz, offsets),
        "time": lambda: to_time,
        "json": lambda: to_json,
    }[type_name]()
