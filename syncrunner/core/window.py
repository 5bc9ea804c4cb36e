"""The window a run fetches: which cursor range, why, and where a resumed run starts. Plain data
that the runtime decides (runtime/strategy.py) and every source reads."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Window:
    mode: str                      # since | full | delta | initial
    reason: str
    since: Any = None              # lower bound (inclusive) in cursor-field terms: UTC datetime, int...
    until: Any = None              # upper bound (exclusive)
    resume_run: int | None = None  # the failed run this one resumes
    position: dict | None = None   # keyset position to resume after
    watermark: str | None = None   # watermark carried from a resumed run
    base_watermark: str | None = None  # the completed run's watermark a delta window starts from

    @property
    def bounded(self) -> bool:
        return self.since is not None or self.until is not None

    def as_config(self) -> dict:
        return {"mode": self.mode, "since": iso_text(self.since), "until": iso_text(self.until)}


def iso_text(v: Any) -> str | None:
    if v is None:
        return None
    return v.isoformat() if hasattr(v, "isoformat") else str(v)
