"""Pieces shared by the REST fakes of issue 24 (Arrivy, SalesRabbit, LeadConduit, GoHighLevel).

Why: each of those fakes must let a test seed records, change or delete them between runs
(or between two pages of one run), count calls and force 429/5xx answers on chosen requests.
The generic lifecycle, random faults and request log stay in ``server.py``; this module adds
only what those four need on top: a scripted fault queue, a per-page hook and a fixed-window
budget that can report the ``X-RateLimit-*`` style numbers some vendors send.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable

from .server import FakeAPI, Request, Response, as_utc

PageHook = Callable[[str, int], None]


class BadRequest(Exception):
    """A query the vendor refuses; each fake turns it into its own 4xx body."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Scripted:
    status: int
    remaining: int
    path_contains: str | None


class ScriptedFake(FakeAPI):
    """A FakeAPI whose next requests can be told to fail with a given status.

    ``inject(429, count=5)`` answers the next five matching requests with the vendor's own
    429 (or 5xx) body, after the auth check, so a test gets an exact, repeatable storm.
    ``page_hook`` (entity, page_number) runs before a list page is built: a test uses it to
    change or delete records between two pages of one run.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._script: deque[_Scripted] = deque()
        self.page_hook: PageHook | None = None

    def inject(self, status: int, count: int = 1, path_contains: str | None = None) -> None:
        with self._lock:
            self._script.append(_Scripted(status, count, path_contains))

    def _take_scripted(self, req: Request) -> int | None:
        with self._lock:
            for item in self._script:
                if item.path_contains is None or item.path_contains in req.path:
                    item.remaining -= 1
                    if item.remaining <= 0:
                        self._script.remove(item)
                    return item.status
        return None

    def dispatch(self, req: Request) -> tuple[Response | None, str | None]:
        match, route_ = self._match(req)
        if route_ is not None and self.is_authorized(req):
            status = self._take_scripted(req)
            if status == 429:
                return self._with_retry_after(self.rate_limited(req)), "throttle"
            if status is not None:
                return self.server_error(req, status), "error"
        return super().dispatch(req)

    # Vendors answering ``{"message": ...}``: override ``messages`` (or a hook) per vendor.
    messages = {401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}

    def message(self, status: int, text: str | None = None) -> Response:
        return Response(status, {"message": text or self.messages.get(status, self.messages[500])})

    def unauthorized(self, req: Request) -> Response:
        return self.message(401)

    def rate_limited(self, req: Request) -> Response:
        return self.message(429)

    def server_error(self, req: Request, status: int) -> Response:
        return Response(status, {"message": self.messages[500]})

    def not_found(self, req: Request) -> Response:
        return self.message(404)

    def before_page(self, entity: str, page: int) -> None:
        if self.page_hook is not None:
            self.page_hook(entity, page)


class WindowBudget:
    """At most ``limit`` requests per fixed window of ``window_s`` seconds (window starts at
    the first request after the previous one ended). ``take()`` answers (allowed, remaining,
    seconds until the window resets)."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self._clock = limit, window_s, clock
        self._start: float | None = None
        self._used = 0
        self._lock = threading.Lock()

    def take(self) -> tuple[bool, int, float]:
        with self._lock:
            now = self._clock()
            if self._start is None or now - self._start >= self.window_s:
                self._start, self._used = now, 0
            reset = self.window_s - (now - self._start)
            if self._used >= self.limit:
                return False, 0, reset
            self._used += 1
            return True, self.limit - self._used, reset

    def peek_remaining(self) -> int:
        with self._lock:
            return max(0, self.limit - self._used)


# --------------------------------------------------------------------------- #
# query helpers
# --------------------------------------------------------------------------- #
def int_arg(req: Request, name: str, default: int, low: int = 1) -> int:
    """An integer query parameter; a non-number or one below ``low`` is a BadRequest."""
    raw = req.arg(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(float(raw))
    except ValueError as exc:
        raise BadRequest(f"{name} must be a number") from exc
    if value < low:
        raise BadRequest(f"{name} must not be less than {low}")
    return value


def parse_iso(text: str) -> datetime:
    """ISO 8601 with ``Z`` or an offset; a naive value is taken as UTC."""
    try:
        return as_utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
    except ValueError as exc:
        raise BadRequest(f"invalid date: {text!r}") from exc


def parse_http_or_iso(text: str) -> datetime:
    """An ISO 8601 value, or an RFC 7231 HTTP-date (``Sat, 05 Dec 2026 10:00:00 GMT``)."""
    try:
        return parse_iso(text)
    except BadRequest:
        try:
            return as_utc(parsedate_to_datetime(text))
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"invalid date: {text!r}") from exc


def epoch_ms(moment: datetime) -> int:
    return int(round(as_utc(moment).timestamp() * 1000))


def iso_millis_z(moment: datetime) -> str:
    """``2021-08-03T04:55:17.355Z`` (JavaScript ``toISOString``)."""
    m = as_utc(moment)
    return m.strftime("%Y-%m-%dT%H:%M:%S.") + f"{m.microsecond // 1000:03d}Z"


def iso_seconds_offset(moment: datetime) -> str:
    """``2021-07-04T01:03:20+00:00`` (seconds, explicit UTC offset)."""
    return as_utc(moment).replace(microsecond=0).isoformat()


def iso_naive_utc(moment: datetime) -> str:
    """``2016-11-21T17:00:07`` (UTC without any offset marker)."""
    return as_utc(moment).replace(microsecond=0, tzinfo=None).isoformat()


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
