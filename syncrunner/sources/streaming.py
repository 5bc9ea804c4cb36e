"""Pieces shared by the streaming sources (HTTP, file): reading and typing the cursor of a raw record,
the client-side window test, and cutting a record stream into chunks with a resume position."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from syncrunner.core.coerce import coercer
from syncrunner.core.mapping import make_getter
from syncrunner.core.records import Chunk
from syncrunner.core.window import Window
from syncrunner.spec.model import Spec


@dataclass
class CursorReader:
    """The spec's cursor of a raw record, typed like its target field, so it compares with the
    window bounds (UTC datetimes, dates or integers). None when the spec has no cursor, the value is
    missing or it cannot be typed (the mapping then reports that record)."""

    get: Callable[[dict], Any] | None
    convert: Callable[[Any], Any] | None

    @classmethod
    def for_spec(cls, spec: Spec) -> "CursorReader":
        if not spec.source.cursor or not spec.cursor_field:
            return cls(None, None)
        f = spec.fields[spec.cursor_field]
        return cls(make_getter(spec.source.cursor),
                   coercer(f.type, tz=spec.source.timezone, precision=f.precision, scale=f.scale,
                           number_format=f.number_format, date_format=f.date_format))

    @property
    def enabled(self) -> bool:
        return self.get is not None

    def __call__(self, rec: dict) -> Any:
        if self.get is None:
            return None
        raw = self.get(rec)
        if raw is None or raw == "":
            return None
        try:
            return self.convert(raw)
        except (ValueError, TypeError, ArithmeticError):
            return None


def in_window(value: Any, window: Window, null_cursor: str) -> bool:
    """Client-side window test: since <= value < until. Rows without a cursor value only belong to
    unbounded runs, and only when the spec includes them."""
    if value is None:
        return not window.bounded and null_cursor == "include"
    if window.since is not None and value < window.since:
        return False
    return window.until is None or value < window.until


def key_getter(spec: Spec) -> Callable[[dict], Any]:
    """The source key of a raw record: one value, or a tuple for a composite key."""
    getters = [make_getter(k) for k in spec.source.key]
    if len(getters) == 1:
        return getters[0]
    return lambda rec: tuple(g(rec) for g in getters)


def chunked(records: Iterable[dict], position: Callable[[], dict], size: int, limit: int) -> Iterator[Chunk]:
    """Group a lazy record stream into chunks. `position()` is asked right after the last record of
    a chunk was drawn, so it describes exactly what that chunk contains. limit 0 = no limit."""
    buf: list[dict] = []
    taken = 0
    for rec in records:
        buf.append(rec)
        taken += 1
        if len(buf) >= size or (limit and taken >= limit):
            yield Chunk(buf, position())
            buf = []
        if limit and taken >= limit:
            return
    if buf:
        yield Chunk(buf, position())
