"""Type coercion of source values to the spec's field types. A value that cannot be coerced raises
DataError: the record is a data error (dead letter), never garbage in the target."""
from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import re
import unicodedata
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


def parse_formatted(v: str, decimal_mark: str = ".") -> decimal.Decimal:
    """A number as a spreadsheet or report shows it: `$1,234.50`, `-1,234`, `(1,234.50)` (accounting
    negative), `12%` (0.12, the value the cell holds), `1.234,50 €` with decimal_mark ",". Thousands
    are grouped by the other mark, a space, a no-break space or an apostrophe, in groups of three.
    Currency signs (any Unicode currency symbol) may lead or trail. Anything else is not a number."""
    s = v.strip()
    negative = s.startswith("(") and s.endswith(")")
    if negative:
        s = s[1:-1].strip()
    percent = s.endswith("%")
    if percent:
        s = s[:-1].strip()
    s = "".join(ch for ch in s if not _is_currency(ch)).strip()
    if s and s[0] in "+-":
        negative, s = negative != (s[0] == "-"), "".join(ch for ch in s[1:] if not _is_currency(ch)).strip()
    m = _grouped(decimal_mark).fullmatch(s)
    if not m:
        raise ValueError(f"{v!r} is not a number")
    whole = re.sub(r"\D", "", m.group(1) or "")
    frac = m.group(2)
    d = decimal.Decimal((whole or "0") + (f".{frac}" if frac else ""))
    d = d.scaleb(-2) if percent else d
    return -d if negative else d


def _is_currency(ch: str) -> bool:
    return unicodedata.category(ch) == "Sc"


@functools.lru_cache(maxsize=4)
def _grouped(decimal_mark: str) -> re.Pattern:
    """Digits, optionally grouped by threes, then optionally the decimal mark and digits."""
    sep = "[" + re.escape(("," if decimal_mark == "." else ".") + " \u00a0\u202f'") + "]"
    dm = re.escape(decimal_mark)
    return re.compile(rf"(\d{{1,3}}(?:{sep}\d{{3}})+|\d+)?(?:{dm}(\d*))?(?<=\d)")


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


def make_decimal(precision: int, scale: int, number_format: str | None = None) -> Callable[[Any], decimal.Decimal]:
    quantum = decimal.Decimal(1).scaleb(-scale)
    limit = decimal.Decimal(10) ** (precision - scale)

    def to_decimal(v: Any) -> decimal.Decimal:
        if isinstance(v, bool):
            raise ValueError(f"{v!r} is not a number")
        try:
            if isinstance(v, decimal.Decimal):
                d = v
            elif number_format is not None and isinstance(v, str):
                d = parse_formatted(v, number_format)
            else:
                d = decimal.Decimal(str(v).strip().replace(",", ""))
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


def text_date(date_format: str) -> Callable[[Any], dt.date]:
    """to_date that reads text in the given strptime format (`%m/%d/%Y`: `1/15/2025`)."""
    def convert(v: Any) -> dt.date:
        if isinstance(v, str):
            return _strptime(v, date_format).date()
        return to_date(v)
    return convert


def _strptime(v: str, date_format: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(v.strip(), date_format)
    except ValueError:
        raise ValueError(f"{v!r} does not match the date format {date_format!r}") from None


def make_datetime(tz_name: str, offsets: DayOffsets | None = None,
                  date_format: str | None = None) -> Callable[[Any], dt.datetime]:
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
        elif date_format is not None and isinstance(v, str):
            d = _strptime(v, date_format)
        else:
            s = str(v).strip()
            if _zero_date(s):
                raise ValueError(f"zero date {s!r}")
            if _INT.fullmatch(s):
                return _epoch(float(s))
            ms_date = _MS_DATE.fullmatch(s)
            if ms_date:
                return _ms_date(ms_date)
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


# Microsoft's JSON date (WCF, OData v2 verbose JSON: MarketSharp): milliseconds since the epoch, UTC,
# with an optional offset that only records the sender's zone and does not move the instant
_MS_DATE = re.compile(r"/Date\((-?\d+)([+-]\d{4})?\)/")


def _ms_date(m: re.Match) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=int(m.group(1)))


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


def formatted_integer(decimal_mark: str) -> Callable[[Any], int]:
    """to_integer that also reads formatted text (`1,234`, `$12`; see parse_formatted)."""
    def convert(v: Any) -> int:
        return to_integer(parse_formatted(v, decimal_mark) if isinstance(v, str) else v)
    return convert


def coercer(type_name: str, *, tz: str = "UTC", precision: int = 18, scale: int = 4,
            offsets: DayOffsets | None = None, number_format: str | None = None,
            date_format: str | None = None) -> Callable[[Any], Any]:
    """`number_format` (a decimal mark, "." or ","): integer and decimal fields read numbers as
    formatted text too (field option `number_format`). `date_format` (strptime): date and datetime
    fields read text in that format (field option `date_format`)."""
    return {
        "string": lambda: to_string,
        "integer": lambda: to_integer if number_format is None else formatted_integer(number_format),
        "decimal": lambda: make_decimal(precision, scale, number_format),
        "boolean": lambda: to_boolean,
        "date": lambda: to_date if date_format is None else text_date(date_format),
        "datetime": lambda: make_datetime(tz, offsets, date_format),
        "time": lambda: to_time,
        "json": lambda: to_json,
    }[type_name]()
