"""What an API's rate-limit headers say, besides Retry-After: how long until the current window
resets, whether the window is used up, and whether a daily budget is.

APIs spell these differently: `X-RateLimit-Reset` as seconds from now or as an epoch time (seconds
or milliseconds), or only the window's length (`X-RateLimit-Interval-Milliseconds`, HighLevel) with
`X-RateLimit-Remaining`. The names are the defaults below; a spec declares others under
`rate_limit.headers`."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping

EPOCH_S = 1_000_000_000        # larger: an epoch time in seconds (2001 on), not a number of seconds
EPOCH_MS = 1_000_000_000_000   # larger: an epoch time in milliseconds


@dataclass(frozen=True)
class RateHeaders:
    """Header names (matched case-insensitively)."""

    remaining: str = "X-RateLimit-Remaining"
    reset: str = "X-RateLimit-Reset"
    interval_ms: str = "X-RateLimit-Interval-Milliseconds"
    daily_remaining: str = "X-RateLimit-Daily-Remaining"
    daily_reset: str = "X-RateLimit-Daily-Reset"

    @classmethod
    def from_options(cls, options: dict | None) -> "RateHeaders":
        return cls(**(options or {}))

    def read(self, headers: Mapping[str, str], now: float | None = None) -> "RateSignal":
        now = time.time() if now is None else now
        return RateSignal(_int(headers.get(self.remaining)), _reset_wait(headers, self, now),
                          _int(headers.get(self.daily_remaining)),
                          _reset_at(headers.get(self.daily_reset), now), self)


@dataclass(frozen=True)
class RateSignal:
    remaining: int | None      # requests left in the current window
    wait: float | None         # seconds until the window resets (or its whole length), if said
    daily_remaining: int | None
    daily_reset: float | None  # epoch seconds when the daily budget resets, if said
    names: RateHeaders

    @property
    def window_spent(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    @property
    def daily_spent(self) -> bool:
        return self.daily_remaining is not None and self.daily_remaining <= 0

    def daily_message(self) -> str:
        """Why the run stops, and when it may start again."""
        head = f"the API's daily request budget is used up ({self.names.daily_remaining}: {self.daily_remaining})"
        if self.daily_reset is not None:
            at = datetime.fromtimestamp(self.daily_reset, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            left = max(0.0, self.daily_reset - time.time())
            return f"{head}; it resets at {at} (in {_span(left)}): run again after that"
        return (f"{head}; the API did not say when it resets (no {self.names.daily_reset} header): a "
                f"per-day budget resets within 24 hours; run again later")


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else None
    except ValueError:
        return None


def _reset_at(value: str | None, now: float) -> float | None:
    """A reset header as an epoch time in seconds: seconds from now, or an epoch in s or ms."""
    try:
        v = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    if v is None:
        return None
    if v >= EPOCH_MS:
        return v / 1000
    if v >= EPOCH_S:
        return v
    return now + v


def _reset_wait(headers: Mapping[str, str], names: RateHeaders, now: float) -> float | None:
    at = _reset_at(headers.get(names.reset), now)
    if at is not None:
        return max(0.0, at - now)
    interval = _int(headers.get(names.interval_ms))
    return interval / 1000 if interval is not None else None


def _span(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{int(seconds % 60):02d}s"
