"""Shared machinery for the in-process fake HTTP APIs used by the test suite.

Why: tests must exercise the real HTTP stack (``requests`` -> socket -> server),
including the failure modes a sync runner meets in production: throttling,
5xx errors, dropped connections and truncated bodies. Each fake (HubSpot,
CallRail) only supplies routes, an auth check and its own error-body shapes;
everything else (server lifecycle, routing, fault injection, rate limiting,
request log and counters) lives here so the fakes stay small and consistent.

Fault injection is deterministic for a given ``Faults.seed`` as long as the
client sends its requests sequentially (the random draws happen in request
order). All settings can be changed at runtime, e.g. ``fake.faults.error_rate = 0.1``.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

JSONType = Any


# --------------------------------------------------------------------------- #
# Value objects
# --------------------------------------------------------------------------- #
@dataclass
class Faults:
    """Fault-injection settings; mutate the fields at any time during a test.

    ``rate_limit_per_second`` is a global sliding-window limit over all
    authenticated requests (fakes may add their own per-endpoint limits).
    ``latency_seconds`` is slept in every request (after the route ran), so a test or a
    measurement sees a real API's round trip. ``malformed_pages`` holds page numbers
    as the fake understands them (page param, or ``after // limit + 1`` for HubSpot
    search); ``malformed_requests`` holds 1-based request indexes. Both are answered
    200 with truncated JSON.
    """

    seed: int = 0
    rate_limit_per_second: float | None = None
    retry_after_seconds: int = 1
    error_rate: float = 0.0
    error_statuses: tuple[int, ...] = (500, 502, 503)
    drop_rate: float = 0.0
    malformed_pages: set[int] = field(default_factory=set)
    malformed_requests: set[int] = field(default_factory=set)
    latency_seconds: float = 0.0  # each request's time in the server, as a real API's round trip


@dataclass
class Request:
    """An incoming request, already parsed for handlers."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw_body: bytes
    params: dict[str, str]
    base_url: str
    index: int
    target: str = ""  # the request line's path and query, exactly as sent

    def arg(self, name: str, default: str | None = None) -> str | None:
        """First value of a query parameter (Rails/HubSpot style single values)."""
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> JSONType:
        """Body parsed as JSON; raises ValueError on invalid JSON."""
        if not self.raw_body:
            return {}
        return json.loads(self.raw_body.decode("utf-8"))


@dataclass
class Response:
    """What a handler returns; ``page`` lets the server apply malformed_pages. A ``bytes`` body is
    sent as is (a fake with its own JSON encoder)."""

    status: int
    body: JSONType = None
    headers: dict[str, str] = field(default_factory=dict)
    page: int | None = None


@dataclass
class LoggedRequest:
    """One line of the request log (status is None for dropped connections)."""

    index: int
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    status: int | None
    fault: str | None
    at: float


@dataclass
class Counters:
    """Aggregate counters tests can assert on."""

    requests: int = 0
    ok: int = 0
    throttled: int = 0
    injected_errors: int = 0
    dropped: int = 0
    malformed: int = 0
    unauthorized: int = 0
    client_errors: int = 0
    max_in_flight: int = 0  # the most requests the server was handling at one time


Handler = Callable[[Request], Response]


@dataclass
class Route:
    """A method + path regex; ``limit_group`` names an extra rate limiter."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler
    limit_group: str | None = None


def route(method: str, regex: str, handler: Handler, limit_group: str | None = None) -> Route:
    """Build a Route from a regex with named groups, anchored on both ends."""
    return Route(method, re.compile(f"^{regex}$"), handler, limit_group)


# --------------------------------------------------------------------------- #
# Rate limiting
# --------------------------------------------------------------------------- #
class SlidingWindowLimiter:
    """Allows at most ``per_second`` accepted requests in any 1 s window."""

    def __init__(self) -> None:
        self._stamps: deque[float] = deque()
        self._lock = threading.Lock()

    def allow(self, per_second: float | None, now: float) -> bool:
        if not per_second:
            return True
        with self._lock:
            while self._stamps and now - self._stamps[0] >= 1.0:
                self._stamps.popleft()
            if len(self._stamps) >= per_second:
                return False
            self._stamps.append(now)
            return True


# --------------------------------------------------------------------------- #
# Time helpers shared by both fakes
# --------------------------------------------------------------------------- #
def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """Treat naive datetimes as UTC; normalise aware ones to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def correlation_id() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- #
# The base fake
# --------------------------------------------------------------------------- #
class FakeAPI:
    """Base class: lifecycle, dispatch, faults, log. Subclasses override hooks.

    Hooks: ``routes()``, ``is_authorized(req)``, ``unauthorized(req)``,
    ``rate_limited(req)``, ``server_error(req, status)``, ``not_found(req)``.
    """

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.group_limits: dict[str, float | None] = {}
        self.log: list[LoggedRequest] = []
        self.counters = Counters()
        self.now: datetime | None = None  # frozen "now" when set; real clock otherwise
        self._routes = self.routes()
        self._limiters: dict[str, SlidingWindowLimiter] = {}
        self._rng = random.Random(self.faults.seed)
        self._rng_seed = self.faults.seed
        self._lock = threading.Lock()
        self._in_flight = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ----- lifecycle -------------------------------------------------------
    def start(self) -> "FakeAPI":
        handler_cls = _make_handler(self)
        self._server = _Server(("127.0.0.1", 0), handler_cls)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("fake server not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def current_time(self) -> datetime:
        return as_utc(self.now) if self.now is not None else utc_now()

    # ----- log helpers -----------------------------------------------------
    def reset_log(self) -> None:
        """Forget logged requests and zero the counters (store is untouched)."""
        with self._lock:
            self.log.clear()
            self.counters = Counters()

    def statuses(self) -> list[int | None]:
        return [entry.status for entry in self.log]

    def count(self, status: int | None = None, path_contains: str | None = None) -> int:
        return sum(
            1
            for e in self.log
            if (status is None or e.status == status)
            and (path_contains is None or path_contains in e.path)
        )

    # ----- hooks (override) ------------------------------------------------
    def routes(self) -> list[Route]:
        return []

    def is_authorized(self, req: Request) -> bool:
        return True

    def unauthorized(self, req: Request) -> Response:
        return Response(401, {"error": "unauthorized"})

    def rate_limited(self, req: Request) -> Response:
        return Response(429, {"error": "rate limited"})

    def server_error(self, req: Request, status: int) -> Response:
        return Response(status, {"error": "server error"})

    def not_found(self, req: Request) -> Response:
        return Response(404, {"error": "not found"})

    # ----- dispatch --------------------------------------------------------
    def _draw(self) -> float:
        with self._lock:
            if self._rng_seed != self.faults.seed:  # seed changed at runtime
                self._rng = random.Random(self.faults.seed)
                self._rng_seed = self.faults.seed
            return self._rng.random()

    def _limiter(self, name: str) -> SlidingWindowLimiter:
        with self._lock:
            return self._limiters.setdefault(name, SlidingWindowLimiter())

    def _next_index(self) -> int:
        with self._lock:
            self.counters.requests += 1
            return self.counters.requests

    @property
    def in_flight(self) -> int:
        """Requests being handled now (a killed client's may still be)."""
        with self._lock:
            return self._in_flight

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.counters.max_in_flight = max(self.counters.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def dispatch(self, req: Request) -> tuple[Response | None, str | None]:
        """Apply faults then route. Returns (response or None=drop, fault name)."""
        f = self.faults
        if f.drop_rate and self._draw() < f.drop_rate:
            return None, "drop"
        if f.error_rate and self._draw() < f.error_rate:
            status = f.error_statuses[int(self._draw() * len(f.error_statuses))]
            return self.server_error(req, status), "error"
        match, route_ = self._match(req)
        if route_ is None:
            return self.not_found(req), None
        if not self.is_authorized(req):
            return self.unauthorized(req), None
        now = time.monotonic()
        group = route_.limit_group
        if group and not self._limiter(group).allow(self.group_limits.get(group), now):
            return self._with_retry_after(self.rate_limited(req)), "throttle"
        if not self._limiter("*").allow(f.rate_limit_per_second, now):
            return self._with_retry_after(self.rate_limited(req)), "throttle"
        req.params = match.groupdict() if match else {}
        resp = route_.handler(req)
        malformed = req.index in f.malformed_requests or (
            resp.page is not None and resp.page in f.malformed_pages
        )
        return resp, ("malformed" if malformed and resp.status == 200 else None)

    def _match(self, req: Request) -> tuple[re.Match[str] | None, Route | None]:
        for r in self._routes:
            m = r.pattern.match(req.path)
            if m and r.method == req.method:
                return m, r
        return None, None

    def _with_retry_after(self, resp: Response) -> Response:
        resp.headers.setdefault("Retry-After", str(self.faults.retry_after_seconds))
        return resp

    def record(self, req: Request, status: int | None, fault: str | None) -> None:
        with self._lock:
            c = self.counters
            if fault == "drop":
                c.dropped += 1
            elif fault == "error":
                c.injected_errors += 1
            elif fault == "malformed":
                c.malformed += 1
            if status == 429:
                c.throttled += 1
            elif status == 401:
                c.unauthorized += 1
            elif status is not None and 200 <= status < 300:
                c.ok += 1
            elif status is not None and 400 <= status < 500:
                c.client_errors += 1
            self.log.append(
                LoggedRequest(req.index, req.method, req.path, req.query, req.raw_body,
                              status, fault, time.time())
            )


class _Server(ThreadingHTTPServer):
    """Daemon handler threads; a listen backlog big enough for parallel clients
    (the default of 5 makes the kernel refuse connections the fake never saw)."""

    daemon_threads = True
    request_queue_size = 128


def _make_handler(fake: FakeAPI) -> type[BaseHTTPRequestHandler]:
    """Bind a request-handler class to one fake instance."""

    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like real APIs behind a CDN
        timeout = 10

        def log_message(self, format: str, *args: Any) -> None:  # silence stderr
            return

        def setup(self) -> None:
            super().setup()
            # headers and body are separate writes: without NODELAY, Nagle +
            # delayed ACK add ~40 ms to every keep-alive request
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            req = Request(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                raw_body=raw,
                params={},
                base_url=fake.base_url,
                index=fake._next_index(),
                target=self.path,
            )
            fake._enter()
            try:
                resp, fault = fake.dispatch(req)
                if fake.faults.latency_seconds:
                    time.sleep(fake.faults.latency_seconds)
            except Exception as exc:  # a bug in a fake must surface, not hang
                resp, fault = Response(500, {"fake_error": repr(exc)}), None
            finally:
                fake._leave()
            if resp is None:
                fake.record(req, None, fault)
                self._drop()
                return
            payload = resp.body if isinstance(resp.body, bytes) else (
                b"" if resp.body is None else json.dumps(resp.body).encode())
            if fault == "malformed":
                payload = payload[: max(1, len(payload) // 2)]
            fake.record(req, resp.status, fault)
            self.send_response(resp.status)
            if not any(k.lower() == "content-type" for k in resp.headers):  # an XML fake sends its own
                self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in resp.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def _drop(self) -> None:
            """Close the socket without writing a status line."""
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return _Handler
