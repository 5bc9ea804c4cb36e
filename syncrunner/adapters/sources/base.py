"""The contract between the generic engine and a source adapter."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import starmap
from typing import Any, Callable, Iterator, Protocol

from ...runtime.strategy import Window
from ...spec import Spec


class LazyRecords(Sequence):
    """A packed chunk's records, each built from its decoded array the first time it is asked
    for: a record skipped as unchanged (row fingerprints) is never built at all."""

    __slots__ = ("arrays", "make", "built")

    def __init__(self, arrays: list[list], make: Callable[..., dict]):
        self.arrays = arrays
        self.make = make
        self.built: list[dict | None] = [None] * len(arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    def all(self) -> list[dict]:
        """Every record, built in one C-level pass where none was built yet."""
        if not any(self.built):
            self.built = list(starmap(self.make, self.arrays))
        return [self[i] for i in range(len(self.arrays))] if None in self.built else self.built

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self.arrays)))]
        rec = self.built[i]
        if rec is None:
            rec = self.built[i] = self.make(*self.arrays[i])
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
