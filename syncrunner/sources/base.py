"""The contract between the generic engine and a source adapter."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

from syncrunner.core.records import Chunk
from syncrunner.core.window import Window


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
