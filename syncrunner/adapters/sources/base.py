"""The contract between the generic engine and a source adapter."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import repeat, starmap
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

from ...spec import Spec

if TYPE_CHECKING:  # the strategy module brings SQLAlchemy, which a mapping worker never needs
    from ...runtime.strategy import Window


_SCAN = json.JSONDecoder(parse_float=Decimal).scan_once  # the C scanner: no whitespace regex per row


def decode_arrays(raw: list[str]) -> list[list]:
    """Packed rows' JSON texts -> their arrays (decimals stay Decimal)."""
    return list(map(itemgetter(0), map(_SCAN, raw, repeat(0))))


@dataclass(frozen=True)
class RecordRecipe:
    """How a packed row's array becomes its record, as plain picklable data: column names and
    the converter (a module-level function or class) of each column that needs one. A mapping
    worker process rebuilds the record maker from it."""
    names: tuple[str, ...]
    convert: tuple[tuple[int, Callable[[Any], Any]], ...]


class LazyRecords(Sequence):
    """A packed chunk's records, decoded from their JSON text and built the first time they are
    asked for: a record skipped as unchanged (row fingerprints) is never built, and a chunk
    mapped by a worker process is decoded there, not here."""

    __slots__ = ("raw", "make", "recipe", "built", "_arrays")

    def __init__(self, raw: list[str], make: Callable[..., dict], recipe: RecordRecipe | None = None):
        self.raw = raw
        self.make = make
        self.recipe = recipe
        self.built: list[dict | None] = [None] * len(raw)
        self._arrays: list[list] | None = None

    @property
    def arrays(self) -> list[list]:
        if self._arrays is None:
            self._arrays = decode_arrays(self.raw)
        return self._arrays

    def leading_ints(self) -> list[int] | None:
        """Each row's first value when every one is an integer, read off the text without decoding
        the rows (~0.3 against ~1.8 us/row): a key lookup of a no-change run needs no more. A
        packed row starts `[<digits>,` (source/sql.py writes it); None if any row does not."""
        try:
            return [int(t[1:t.index(",")]) for t in self.raw]
        except ValueError:  # a NULL, a string, a one-column row: decode instead
            return None

    def __len__(self) -> int:
        return len(self.raw)

    def all(self) -> list[dict]:
        """Every record, built in one C-level pass where none was built yet."""
        if not any(self.built):
            self.built = list(starmap(self.make, self.arrays))
        return [self[i] for i in range(len(self.raw))] if None in self.built else self.built

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self.raw)))]
        rec = self.built[i]
        if rec is None:
            array = self._arrays[i] if self._arrays is not None else _SCAN(self.raw[i], 0)[0]
            rec = self.built[i] = self.make(*array)
        return rec


@dataclass
class Chunk:
    records: list[dict]
    position: dict            # JSON-safe: where the next chunk starts (stored in the checkpoint)
    raw: list[str] | None = None  # each record's JSON text as the source sent it, when that was free
    # column -> index into records.arrays[i] for columns whose value is the record's own (records
    # then are LazyRecords: a key can be read without building the record)
    as_read: dict[str, int] | None = None


class BadRecord(dict):
    """A record the source could read but not parse (a CSV row with too many columns, a JSON Lines
    line that is not JSON). The engine sends it to the dead-letter table with `reason` instead of
    mapping it, so one bad line costs one record, not the run."""

    def __init__(self, raw: dict, reason: str):
        super().__init__(raw)
        self.reason = reason


@dataclass
class SourceMetrics:
    api_calls: int = 0
    retries: int = 0
    queries: int = 0
    null_cursor_rows: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Source(Protocol):
    metrics: SourceMetrics

    def chunks(self, window: Window, position: dict | None, limit: int) -> Iterator[Chunk]:
        """Records of the window in cursor order, resuming after `position`; at most `limit`
        records in all (0 = no limit)."""

    def count(self, window: Window) -> int | None:
        """How many records the window holds, if cheaply known (for progress)."""

    def describe(self, window: Window) -> dict:
        """What the first fetch would send (for `syncrunner plan`), secrets redacted."""

    def close(self) -> None: ...


def make_source(spec: Spec) -> Source:
    kind = spec.source.kind
    if kind == "sql":
        from .sql import SqlSource
        return SqlSource(spec)
    if kind == "http":
        from .http import HttpSource
        return HttpSource(spec)
    if kind == "file":
        from .file import FileSource
        return FileSource(spec)
    raise ValueError(f"unknown source kind {kind!r}")
