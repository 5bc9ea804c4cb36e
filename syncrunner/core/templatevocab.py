"""What templates may use: the functions, filters and tests of syncrunner's Jinja environment.

This is the whole vocabulary (templating.py builds the sandboxed environment from these tables,
templatecheck.py refuses anything else, docsgen lists them in docs/spec-reference.md). A filter or
function is here only when it reads no attribute by a name the template chooses and calls nothing
the template passes in."""
from __future__ import annotations

import datetime as dt
import email.utils
import functools
import json
from dataclasses import dataclass
from typing import Any, Callable

import jinja2
from jinja2.filters import FILTERS as _JINJA_FILTERS
from jinja2.tests import TESTS as _JINJA_TESTS


def combine(date: Any, time: Any) -> dt.datetime | None:
    """A date and a time-of-day (MySQL TIME arrives as a timedelta) into one datetime."""
    if date is None:
        return None
    if isinstance(date, str):
        date = dt.date.fromisoformat(date[:10])
    if isinstance(date, dt.datetime):
        date = date.date()
    if time is None:
        return dt.datetime.combine(date, dt.time())
    if isinstance(time, dt.timedelta):
        return dt.datetime.combine(date, dt.time()) + time
    if isinstance(time, str):
        time = dt.time.fromisoformat(time)
    return dt.datetime.combine(date, time)


def coalesce(*values: Any) -> Any:
    for v in values:
        if v is not None and v != "":
            return v
    return None


def epoch_ms(value: Any) -> int | None:
    """A datetime as epoch milliseconds (HubSpot filters); naive values are taken as UTC."""
    if value is None or isinstance(value, jinja2.Undefined):
        return None
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return int(round(value.timestamp() * 1000))


def epoch_s(value: Any) -> int | None:
    ms = epoch_ms(value)
    return None if ms is None else ms // 1000


def iso(value: Any) -> str | None:
    """ISO 8601 text of a date or datetime (aware values keep their offset)."""
    if value is None or isinstance(value, jinja2.Undefined):
        return None
    return value.isoformat()


def http_date(value: Any) -> str | None:
    """RFC 7231 IMF-fixdate (`Sat, 05 Dec 2026 10:00:00 GMT`), the form of HTTP date headers such as
    If-Modified-Since; naive values are taken as UTC. Whole seconds: a fraction is dropped, which
    moves a lower bound earlier, never later."""
    if value is None or isinstance(value, jinja2.Undefined):
        return None
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return email.utils.format_datetime(value.astimezone(dt.timezone.utc), usegmt=True)


MAX_DAYS = 3_660_000  # a larger step would leave the datetime range anyway


def _when(value: Any) -> dt.date | None:
    """A date or datetime, also from ISO text (a JSON record's timestamp); None stays None."""
    if value is None or isinstance(value, jinja2.Undefined) or value == "":
        return None
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        return dt.datetime.fromisoformat(text) if "T" in text or " " in text else dt.date.fromisoformat(text)
    if isinstance(value, dt.date):
        return value
    raise TypeError(f"expected a date or datetime, got {type(value).__name__}")


def add_days(value: Any, days: Any) -> dt.date | None:
    """A date or datetime `days` days later (negative: earlier); ISO text is read first."""
    when = _when(value)
    n = float(days)
    if abs(n) > MAX_DAYS:
        raise ValueError(f"add_days({days}) is out of range")
    return None if when is None else when + dt.timedelta(days=n)


def minus_days(value: Any, days: Any) -> dt.date | None:
    return add_days(value, -float(days))


def days_ago(days: Any) -> dt.datetime:
    """Now (UTC, to the second) minus `days` days: a rolling bound such as the last 30 days."""
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return add_days(now, -float(days))


def from_json(value: Any) -> Any:
    """JSON text (a database column or an API field holding JSON) as its value; a value that is
    already a list or an object passes unchanged; null and empty text stay null."""
    if value is None or value == "" or isinstance(value, jinja2.Undefined):
        return None
    if isinstance(value, (dict, list)):
        return value
    return json.loads(value)


def jmespath_query(value: Any, expression: str) -> Any:
    """A JMESPath query on a JSON value (objects, lists, text, numbers): it reads object keys and
    list items only, never a Python attribute, so it is safe on whatever the template passes."""
    if value is None or isinstance(value, jinja2.Undefined):
        return None
    return _compiled(expression).search(value)


@functools.lru_cache(maxsize=256)
def _compiled(expression: str):
    import jmespath
    return jmespath.compile(expression)


def odata_datetime(value: Any) -> str | None:
    """An OData v2 DateTime literal, `datetime'2024-01-01T00:00:00'` (UTC; milliseconds when
    there are any), for `$filter`; null stays null."""
    if value is None or isinstance(value, jinja2.Undefined):
        return None
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    elif not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    text = value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")
    return f"datetime'{text}'"


@dataclass(frozen=True)
class Helper:
    """One word of the template vocabulary: the function, how it is written, what it does."""
    func: Callable
    usage: str
    doc: str


def _jinja_filter(name: str, usage: str, doc: str) -> Helper:
    return Helper(_JINJA_FILTERS[name], usage, doc)


FUNCTIONS: dict[str, Helper] = {
    "combine": Helper(combine, "combine(date, time)", "a date and a time of day (or a MySQL TIME) as one datetime"),
    "coalesce": Helper(coalesce, "coalesce(a, b, ...)", "the first value that is neither null nor empty"),
    "days_ago": Helper(days_ago, "days_ago(30)", "now (UTC, to the second) minus that many days, as a datetime: a rolling bound"),
}
FILTERS: dict[str, Helper] = {
    "epoch_ms": Helper(epoch_ms, "since | epoch_ms", "a datetime as epoch milliseconds (naive = UTC); null stays null"),
    "epoch_s": Helper(epoch_s, "since | epoch_s", "a datetime as epoch seconds (naive = UTC); null stays null"),
    "iso": Helper(iso, "since | iso", "ISO 8601 text of a date or datetime; null stays null"),
    "http_date": Helper(http_date, "since | http_date", "an HTTP date header value (RFC 7231 IMF-fixdate, "
                        "`Sat, 05 Dec 2026 10:00:00 GMT`; naive = UTC; whole seconds); null stays null"),
    "from_json": Helper(from_json, "text | from_json", "JSON text as its value (a list or object passes "
                        "unchanged; null and empty text stay null; text that is not JSON is an error)"),
    "jmespath": Helper(jmespath_query, "x | jmespath(\"[?title=='Result'].value | [0]\")",
                       "a JMESPath query on a JSON value (JSON text: parse it with from_json first)"),
    "odata_datetime": Helper(odata_datetime, "since | odata_datetime",
                             "an OData v2 `$filter` literal, datetime'2024-01-01T00:00:00' (UTC); null stays null"),
    "add_days": Helper(add_days, "since | add_days(-7)", "a date or datetime (or ISO text) that many days later; negative: earlier; null stays null"),
    "minus_days": Helper(minus_days, "since | minus_days(7)", "a date or datetime (or ISO text) that many days earlier; null stays null"),
    "abs": _jinja_filter("abs", "x | abs", "absolute value"),
    "capitalize": _jinja_filter("capitalize", "s | capitalize", "first letter upper case, the rest lower case"),
    "default": _jinja_filter("default", "x | default(y)", "y when x is undefined (`default(y, true)`: also when x is false or empty)"),
    "first": _jinja_filter("first", "xs | first", "the first item"),
    "float": _jinja_filter("float", "x | float", "as a float (0.0 when it is not a number)"),
    "int": _jinja_filter("int", "x | int", "as an integer (0 when it is not a number)"),
    "join": _jinja_filter("join", "xs | join(', ')", "the items as one string"),
    "last": _jinja_filter("last", "xs | last", "the last item"),
    "length": _jinja_filter("length", "xs | length", "the number of items or characters"),
    "lower": _jinja_filter("lower", "s | lower", "lower case"),
    "max": _jinja_filter("max", "xs | max", "the largest item"),
    "min": _jinja_filter("min", "xs | min", "the smallest item"),
    "replace": _jinja_filter("replace", "s | replace('a', 'b')", "every 'a' replaced by 'b'"),
    "round": _jinja_filter("round", "x | round(2)", "rounded to that many decimals"),
    "string": _jinja_filter("string", "x | string", "as text"),
    "title": _jinja_filter("title", "s | title", "Each Word Capitalized"),
    "tojson": _jinja_filter("tojson", "x | tojson", "as JSON text (for request bodies)"),
    "trim": _jinja_filter("trim", "s | trim", "without leading and trailing white space"),
    "truncate": _jinja_filter("truncate", "s | truncate(20)", "at most that many characters, ending in '...'"),
    "upper": _jinja_filter("upper", "s | upper", "upper case"),
    "urlencode": _jinja_filter("urlencode", "s | urlencode", "percent-encoded for a URL"),
}
TESTS: dict[str, Helper] = {
    name: Helper(_JINJA_TESTS[name], usage, doc) for name, usage, doc in [
        ("none", "x is none", "x is null"),
        ("defined", "x is defined", "the record or context has x"),
        ("undefined", "x is undefined", "the record or context lacks x"),
        ("number", "x is number", "x is a number"),
        ("integer", "x is integer", "x is an integer"),
        ("float", "x is float", "x is a float"),
        ("string", "x is string", "x is text"),
        ("boolean", "x is boolean", "x is true or false"),
        ("true", "x is true", "x is the value true"),
        ("false", "x is false", "x is the value false"),
        ("even", "x is even", "x is an even integer"),
        ("odd", "x is odd", "x is an odd integer"),
        ("divisibleby", "x is divisibleby(3)", "x is a multiple of 3"),
        ("lower", "s is lower", "s is all lower case"),
        ("upper", "s is upper", "s is all upper case"),
        ("in", "x is in(xs)", "x is one of xs (as `x in xs`)"),
    ]}
