"""The contract between the generic engine and a source adapter."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Protocol

from ...spec import Spec

if TYPE_CHECKING:  # the strategy module brings SQLAlchemy, which a mapping worker never needs
    from ...runtime.strategy import Window


@dataclass
class Chunk:
    records: list[dict]
    position: dict            # JSON-safe: where the next chunk starts (stored in the checkpoint)


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
