"""Exact run statistics."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Stats:
    fetched: int = 0      # records read from the source (records_processed)
    created: int = 0
    updated: int = 0
    unchanged: int = 0    # valid records whose stored row was identical: no write
    skipped: int = 0      # of those, matched by fingerprint: not even mapped (also in unchanged)
    stale: int = 0        # older than the stored row under the stale guard: not written (also in failed)
    failed: int = 0       # data errors: in the dead-letter table
    known_bad: int = 0    # rejected again exactly as already kept (unchanged bad record re-read)
    duplicates: int = 0   # the same key twice in one chunk: the later one wins
    chunks: int = 0
    warnings: int = 0     # values nulled by on_invalid: null

    def add(self, other: "Stats") -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)

    def as_dict(self) -> dict:
        return asdict(self)
