"""Built-in validators by name (the reference guide's FIELD_TYPE_VALIDATORS). Each takes the coerced
value and raises ValueError with a reason when it is not acceptable."""
from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Callable
from urllib.parse import urlparse

from syncrunner.core import coerce

# RFC 5322 "dot-atom" addresses, with internationalised (RFC 6531) letters allowed on both sides
_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[^\W_](?:[\w-]{0,61}[^\W_])?(?:\.[^\W_](?:[\w-]{0,61}[^\W_])?)*"
                    r"\.[^\W\d_]{2,63}")
_PHONE_CHARS = re.compile(r"[\d\s().+\-/]+")


def email(v: Any) -> None:
    if not _EMAIL.fullmatch(str(v)):
        raise ValueError(f"invalid email {v!r}")


_PHONE_EXTENSION = re.compile(r"\s*(?:ext\.?|extension|x|#)\s*\d{1,6}\s*$", re.I)


def phone(v: Any) -> None:
    """7 to 15 digits in the usual punctuation, optionally with an extension (ext 12, x12, #12)."""
    s = _PHONE_EXTENSION.sub("", str(v))
    digits = re.sub(r"\D", "", s)
    if not _PHONE_CHARS.fullmatch(s) or not 7 <= len(digits) <= 15:
        raise ValueError(f"invalid phone number {v!r}")


def url(v: Any) -> None:
    p = urlparse(str(v))
    if p.scheme not in ("http", "https") or not p.netloc:
        raise ValueError(f"invalid URL {v!r}")


def date(v: Any) -> None:
    if not isinstance(v, dt.date):
        coerce.to_date(v)


def datetime(v: Any) -> None:
    if not isinstance(v, dt.datetime):
        coerce.make_datetime("UTC")(v)


def number(v: Any) -> None:
    coerce.make_decimal(65, 30)(v)


def boolean(v: Any) -> None:
    coerce.to_boolean(v)


def string(v: Any) -> None:
    if not isinstance(v, str):
        raise ValueError(f"{type(v).__name__} is not a string")


def json_(v: Any) -> None:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        raise ValueError("not serialisable as JSON") from None


BUILTIN: dict[str, Callable[[Any], None]] = {
    "email": email, "phone": phone, "url": url, "date": date, "datetime": datetime,
    "number": number, "boolean": boolean, "string": string, "json": json_,
}
