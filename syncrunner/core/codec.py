"""JSON-safe encoding of source values (cursor and key) for checkpoints, preserving their types so a
resumed keyset query binds exactly what the source returned; and `dumps`, the JSON text of a raw
record or metrics (dates, decimals and bytes as text). No SQLAlchemy: mapping workers use it."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any


def encode(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return {"$dt": v.isoformat()}
    if isinstance(v, dt.date):
        return {"$d": v.isoformat()}
    if isinstance(v, Decimal):
        return {"$dec": str(v)}
    if isinstance(v, dt.timedelta):
        return {"$td": v.total_seconds()}
    if isinstance(v, bytes):
        return {"$b": v.decode("latin-1")}
    return v


def decode(v: Any) -> Any:
    if isinstance(v, dict) and len(v) == 1:
        (tag, val), = v.items()
        if tag == "$dt":
            return dt.datetime.fromisoformat(val)
        if tag == "$d":
            return dt.date.fromisoformat(val)
        if tag == "$dec":
            return Decimal(val)
        if tag == "$td":
            return dt.timedelta(seconds=val)
        if tag == "$b":
            return val.encode("latin-1")
    return v


def json_default(o):
    if isinstance(o, (dt.datetime, dt.date, dt.time)):
        return o.isoformat()
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, bytes):
        return o.decode("utf-8", errors="replace")
    if isinstance(o, dt.timedelta):
        return str(o)
    return str(o)


def dumps(value) -> str:
    return json.dumps(value, default=json_default, sort_keys=True)
