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
    # --start-date / --end-date as UTC datetimes when the cursor is an id, not a time (an id cannot
    # be compared with a date): only a request that uses `start_date` / `end_date` (an API's
    # creation-time filter) applies them. With a time cursor the dates are since/until instead.
    start: Any = None
    end: Any = None
    params: dict | None = None     # the run parameters in effect (spec `params:`), JSON-safe

    @property
    def bounded(self) -> bool:
        return any(v is not None for v in (self.since, self.until, self.start, self.end))

    def as_config(self) -> dict:
        config = {"mode": self.mode, "since": iso_text(self.since), "until": iso_text(self.until)}
        if self.start is not None or self.end is not None:
            config |= {"start_date": iso_text(self.start), "end_date": iso_text(self.end)}
        if self.params:  # a run with other parameter values reads other records: never resumed by it
            config["params"] = self.params
        return config


def iso_text(v: Any) -> str | None:
    if v is None:
        return None
    return v.isoformat() if hasattr(v, "isoformat") else str(v)
