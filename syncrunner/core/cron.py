"""Five-field cron expressions (minute hour day-of-month month day-of-week), checked without
running them: the problem in a sentence, or nothing. Celery beat parses the same text with
celery.schedules.crontab; this is what `lint` can say without Celery installed."""
from __future__ import annotations

import re

_MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
_DAYS = "sun mon tue wed thu fri sat".split()
# name, lowest, highest, names (their numbers start at lowest)
FIELDS = (("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day of month", 1, 31, ()),
          ("month", 1, 12, _MONTHS), ("day of week", 0, 6, _DAYS))
_TERM = re.compile(r"(?P<range>\*|[0-9a-z]+(?:-[0-9a-z]+)?)(?:/(?P<step>[0-9]+))?")


def cron_problem(text: str) -> str | None:
    """Why `text` is not a cron expression Celery's crontab accepts, or None."""
    parts = text.split()
    if len(parts) != 5:
        return (f"{text!r} has {len(parts)} field(s); a cron expression has 5: minute hour day-of-month "
                f"month day-of-week")
    for part, field in zip(parts, FIELDS):
        problem = _field_problem(part.lower(), *field)
        if problem:
            return f"{text!r}: {problem}"
    return None


def _field_problem(part: str, name: str, low: int, high: int, names: tuple) -> str | None:
    for term in part.split(","):
        m = _TERM.fullmatch(term)
        if not m:
            return f"{name} {term!r} is not a number, a range a-b, * or a step */n"
        if m["step"] is not None and int(m["step"]) == 0:
            return f"{name} {term!r}: a step must be at least 1"
        if m["range"] == "*":
            continue
        for value in m["range"].split("-"):
            number = _value(value, low, names)
            allowed = f"{low}-{high}" + (f" or {names[0]}..{names[-1]}" if names else "")
            if number is None:
                return f"{name} {value!r} is not a number" + (" or a name" if names else "") + f" ({allowed})"
            if not low <= number <= high:
                return f"{name} {value!r} is out of range ({allowed})"
    return None  # a range may wrap around (22-2: 22, 23, 0, 1, 2), as in Celery's crontab


def _value(text: str, low: int, names: tuple) -> int | None:
    if text.isdigit():
        return int(text)
    if text[:3] in names and len(text) >= 3:
        return names.index(text[:3]) + low
    return None
