"""Sending one HTTP call of a sync run: the client-side rate budget, retries of transient errors with
exponential backoff and jitter (honouring Retry-After; a 200 whose body does not parse as JSON is
transient too), fail-fast on refused credentials, and error messages that name the URL and page but
never a secret."""
from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from syncrunner.core.redact import redact
from syncrunner.sources.base import SourceMetrics
from syncrunner.sources.http.auth import Auth
from syncrunner.sources.http.googleauth import GoogleAuthError
from syncrunner.sources.http.ratelimit import RateHeaders, RateSignal

log = logging.getLogger("syncrunner.http")
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


class HttpSourceError(Exception):
    """An HTTP source failure the run cannot get past; the message is already redacted."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(redact(message))
        self.status = status  # the HTTP status that ended it, when one did


@dataclass
class Call:
    """One request to send. `url` is absolute; params are added to its query string."""

    method: str
    url: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    page: int = 1
    data: str | None = None  # an XML body (sent as text/xml unless the spec names a Content-Type)

    def display(self, auth: Auth | None = None) -> str:
        """METHOD url?query for messages: auth query parameters left out, then redacted."""
        parts = urlsplit(self.url)
        hidden = set(auth.params) if auth else set()
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in hidden]
        query += [(k, v) for k, v in self.params.items() if k not in hidden]
        url = urlunsplit(parts._replace(query=urlencode(query)))
        return redact(f"{self.method} {url}")


@dataclass
class RetryPolicy:
    max_attempts: int = 6            # in all, the first try included
    backoff: float = 0.5             # seconds before the first retry; doubles each time
    max_backoff: float = 30.0
    max_retry_after: float = 120.0   # a longer Retry-After is cut to this

    @classmethod
    def from_options(cls, options: dict | None) -> "RetryPolicy":
        o = options or {}
        return cls(int(o.get("max_attempts", 6)), float(o.get("backoff", 0.5)),
                   float(o.get("max_backoff", 30)), float(o.get("max_retry_after", 120)))

    def delay(self, retry_no: int, retry_after: float | None) -> float:
        """Full jitter (a random share of the exponential step) spreads clients apart; a server's
        Retry-After is a floor, never shortened."""
        step = min(self.max_backoff, self.backoff * (2 ** (retry_no - 1)))
        jittered = step / 2 + random.uniform(0, step / 2)
        if retry_after is not None:
            return min(self.max_retry_after, max(retry_after, 0.0)) + random.uniform(0, 0.05)
        return jittered


class RateLimiter:
    """Client-side request budget (token bucket) shared by every call of one run, retries included,
    so a run stays under the API's limit instead of bouncing off it. The API's own headers add to
    it: a used-up window holds every call until it resets (`hold`), a used-up daily budget stops
    the run before its next call (`spent`)."""

    def __init__(self, per_second: float | None, burst: int | None = None,
                 headers: RateHeaders | None = None):
        self.per_second = per_second
        self.capacity = float(burst or 1)
        self.tokens = self.capacity
        self.last = time.monotonic()
        self.lock = threading.Lock()
        self.waited = 0.0
        self.headers = headers or RateHeaders()
        self.held_until = 0.0
        self.spent: str | None = None   # why no call may be sent any more (the daily budget)

    def acquire(self) -> None:
        with self.lock:
            now = time.monotonic()
            wait = max(0.0, self.held_until - now)
            if self.per_second:
                self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.per_second)
                self.last = now
                wait = max(wait, 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.per_second)
                self.tokens -= 1
            self.waited += wait
        if wait > 0:
            time.sleep(wait)

    def hold(self, seconds: float) -> None:
        """No call before `seconds` from now (the API said its window is used up)."""
        with self.lock:
            self.held_until = max(self.held_until, time.monotonic() + seconds)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


Explain = Callable[[requests.Response], "str | None"]


class HttpClient:
    """`explain` reads an error response's body for a definite answer (a SOAP fault): such an
    answer fails the call at once with that one line, unless the status is 429 or 503."""

    def __init__(self, auth: Auth, retry: RetryPolicy, limiter: RateLimiter, metrics: SourceMetrics,
                 timeout: float = 30.0, name: str = "source", explain: Explain | None = None):
        self.auth = auth
        self.explain = explain
        self.retry = retry
        self.limiter = limiter
        self.metrics = metrics
        self.timeout = timeout
        self.name = name
        self.lock = threading.Lock()  # the counters, when pages are fetched concurrently (pagepool.py)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []

    @property
    def session(self) -> requests.Session:
        """This thread's session: requests promises no thread-safety for one Session shared between
        threads (psf/requests#2766), and concurrent pages (pagepool.py) send from several."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers["Accept"] = "application/json"
            self.auth.apply(session)
            with self.lock:
                self._sessions.append(session)
        return session

    def send(self, call: Call) -> requests.Response:
        """The response of a successful call; raises HttpSourceError otherwise."""
        return self._send(call, None)[0]

    def send_json(self, call: Call) -> tuple[requests.Response, Any]:
        """The response of a successful call and its body parsed as JSON. A 200 whose body does not
        parse (cut off mid-JSON by a proxy or a dropped upstream connection) is retried like a 5xx."""
        return self._send(call, _json_body)

    def send_decoded(self, call: Call, decode: Callable[[requests.Response], Any]) -> tuple[requests.Response, Any]:
        """As send_json with another decoder (an XML one); its ValueError is retried the same way."""
        return self._send(call, decode)

    def _send(self, call: Call, decode: Callable[[requests.Response], Any] | None) -> tuple[requests.Response, Any]:
        where = f"page {call.page} of {call.display(self.auth)}"
        params = {**call.params, **{k: v for k, v in self.auth.params.items() if k not in _query_keys(call.url)}}
        last_problem = ""
        for attempt in range(1, self.retry.max_attempts + 1):
            if self.limiter.spent:
                raise HttpSourceError(f"{self.name}: not sending {where}: {self.limiter.spent}")
            self.limiter.acquire()
            try:
                self.auth.refresh(self.session)
            except GoogleAuthError as e:  # the key file or the token endpoint: not retried
                raise HttpSourceError(f"{self.name}: {e}") from None
            with self.lock:
                self.metrics.api_calls += 1
            outcome = self._attempt(call, params, where, decode)
            if isinstance(outcome, _Done):
                return outcome.resp, outcome.body
            last_problem, retry_after = outcome
            if attempt == self.retry.max_attempts:
                break
            delay = self.retry.delay(attempt, retry_after)
            self._note_retry(_cause(last_problem), redact(f"{self.name}: {last_problem} on {where}; retry "
                                                          f"{attempt}/{self.retry.max_attempts - 1} in {delay:.1f}s"))
            time.sleep(delay)
        raise HttpSourceError(f"{self.name}: {where} still failing after {self.retry.max_attempts} "
                              f"attempts; last error {last_problem}")

    def _attempt(self, call: Call, params: dict, where: str,
                 decode: Callable[[requests.Response], Any] | None) -> "_Done | tuple[str, float | None]":
        """One try: done, or a transient problem (and the server's Retry-After); raises on a
        permanent one."""
        try:
            resp = self.session.request(call.method, call.url, params=params or None, json=call.json,
                                        data=_data(call), headers=_headers(call), timeout=self.timeout)
        except (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
            return f"{type(e).__name__}: {_short(e)}", None
        signal = self.limiter.headers.read(resp.headers)
        if resp.status_code < 400:
            self._pace(signal)
            try:
                return _Done(resp, decode(resp) if decode is not None else None)
            except ValueError as e:
                return (f"response not valid {getattr(decode, 'what', 'JSON')}: {_short(e)} ({len(resp.content)} bytes, "
                        f"HTTP {resp.status_code})"), None
        self._refuse_explained(resp, where)
        if resp.status_code in (401, 403):
            raise HttpSourceError(
                f"{self.name}: HTTP {resp.status_code} from {where}: the API refused the "
                f"{self.auth.label}; check that credential (not retried). Response: {_body(resp)}")
        if resp.status_code not in TRANSIENT_STATUS:
            raise HttpSourceError(f"{self.name}: HTTP {resp.status_code} from {where}: {_body(resp)}",
                                  resp.status_code)
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        if resp.status_code == 429:
            with self.lock:
                self.metrics.extra["throttled"] = self.metrics.extra.get("throttled", 0) + 1
            retry_after = self._throttled(signal, retry_after, where)
        return f"HTTP {resp.status_code}: {_body(resp, 200)}", retry_after

    def _pace(self, signal: RateSignal) -> None:
        """After a success: the API's window used up -> hold the next call until it resets (or for
        the window's length); its daily budget used up -> the next call fails at once."""
        if signal.window_spent and signal.wait:
            wait = min(signal.wait, self.retry.max_retry_after)
            log.debug("%s: rate-limit window used up; pausing %.1fs", self.name, wait)
            self.limiter.hold(wait)
        if signal.daily_spent:
            self.limiter.spent = signal.daily_message()

    def _throttled(self, signal: RateSignal, retry_after: float | None, where: str) -> float | None:
        """A 429: fail at once on a used-up daily budget (no retry could pass before it resets);
        otherwise wait what Retry-After or the rate-limit headers say."""
        if signal.daily_spent:
            self.limiter.spent = signal.daily_message()
            raise HttpSourceError(f"{self.name}: HTTP 429 from {where}: {self.limiter.spent}")
        wait = retry_after if retry_after is not None else signal.wait
        if wait:
            self.limiter.hold(min(wait, self.retry.max_retry_after))  # every call of the run waits
        return wait

    def _refuse_explained(self, resp: requests.Response, where: str) -> None:
        answer = self.explain(resp) if self.explain is not None else None
        if answer is None or resp.status_code in (429, 503):
            return
        hint = (f"; the API refused the {self.auth.label}: check that credential (not retried)"
                if resp.status_code in (401, 403) else " (not retried)")
        raise HttpSourceError(f"{self.name}: HTTP {resp.status_code} from {where}: {redact(answer)}{hint}",
                              resp.status_code)

    def _note_retry(self, cause: str, detail: str) -> None:
        """Retries are routine: the first of each cause is logged at INFO, the rest at DEBUG, and
        `log_retry_summary` gives one WARNING line per cause with its count."""
        with self.lock:
            self.metrics.retries += 1
            causes = self.metrics.extra.setdefault("retry_causes", {})
            causes[cause] = n = causes.get(cause, 0) + 1
        if n == 1:
            log.info("%s (further retries for %s are counted in the run's summary)", detail, cause)
        else:
            log.debug(detail)

    def log_retry_summary(self) -> None:
        """One WARNING line per distinct cause of the retries of a run, with its count."""
        for cause, n in (self.metrics.extra.get("retry_causes") or {}).items():
            log.warning("%s: retried %d time%s: %s", self.name, n, "" if n == 1 else "s", cause)

    def close(self) -> None:
        with self.lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()


@dataclass
class _Done:
    resp: requests.Response
    body: Any


def _json_body(resp: requests.Response) -> Any:
    """The body as JSON; ValueError when it does not parse (requests' JSONDecodeError is one)."""
    return resp.json()


def _data(call: Call) -> bytes | None:
    return call.data.encode("utf-8") if call.data is not None else None


def _headers(call: Call) -> dict[str, str] | None:
    if call.data is not None and not any(k.lower() == "content-type" for k in call.headers):
        return {**call.headers, "Content-Type": "text/xml; charset=utf-8"}
    return call.headers or None


def _query_keys(url: str) -> set[str]:
    return {k for k, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}


def _cause(problem: str) -> str:
    """A retry's cause without its details: `HTTP 503`, `HTTP 429 (rate limit)`, `ReadTimeout`."""
    head = problem.split(":", 1)[0]
    return f"{head} (rate limit)" if head == "HTTP 429" else head


def _short(e: Exception) -> str:
    """Redacted before it is cut: a cut through a secret would leave its first half unmatched."""
    text = redact(e)
    return text if len(text) < 300 else text[:300] + "..."


def _body(resp: requests.Response, limit: int = 500) -> str:
    text = redact(resp.text.strip().replace("\n", " "))
    return text if len(text) <= limit else text[:limit] + "..."
