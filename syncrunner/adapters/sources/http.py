"""HTTP source: any JSON API described by the spec alone (base URL, auth, request templates, the
record list as a jmespath, a pagination style, a rate budget, a retry policy).

The request's path, params, headers and JSON body are Jinja templates that see the delta window as
`since` / `until` (UTC datetimes or None; filters `epoch_ms`, `epoch_s`, `iso`) and `window`
(true when bounded). A param that renders empty is not sent, so one template can serve full and
delta runs. Records outside the window are also dropped client-side when the spec has a cursor.

`sorted_by_cursor: true` declares that the request returns records in ascending cursor order. The
source then tracks the last cursor value it yielded and the keys yielded at exactly that value, which
gives it two things: a checkpoint to resume from after a crash, and a way past result caps
(`max_results_per_query`, HubSpot search's 10,000): instead of paging into the refusal it re-runs
the query with `since` = the last cursor value and skips the keys it already yielded at that value,
so records sharing one timestamp are neither lost nor duplicated."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import jmespath
import requests

from ...redact import redact
from ...runtime.codec import decode, encode
from ...runtime.strategy import Window
from ...runtime.templating import ENV, compile_expression
from ...spec import Spec
from .base import Chunk, SourceMetrics
from .http_auth import Auth
from .http_client import Call, HttpClient, HttpSourceError, RateLimiter, RetryPolicy
from .http_paging import Paginator
from .streaming import CursorReader, chunked, in_window, key_getter

log = logging.getLogger("syncrunner.http")
DEFAULT_MAX_PAGES = 100_000

Template = Callable[[dict], Any]
_SINGLE = re.compile(r"\{\{(.*)\}\}", re.S)


def compile_template(value: Any) -> Template:
    """A YAML value whose strings are Jinja templates -> a function of the template context."""
    if isinstance(value, str):
        if "{" not in value:
            return lambda ctx: value
        single = _SINGLE.fullmatch(value.strip())
        if single and "{{" not in single.group(1) and "}}" not in single.group(1):
            expr = compile_expression(single.group(1))  # keeps the value's type; None = leave out
            return lambda ctx: expr(**ctx)
        t = ENV.from_string(value)
        return lambda ctx: t.render(**ctx)
    if isinstance(value, dict):
        parts = {k: compile_template(v) for k, v in value.items()}
        return lambda ctx: {k: f(ctx) for k, f in parts.items()}
    if isinstance(value, list):
        items = [compile_template(v) for v in value]
        return lambda ctx: [f(ctx) for f in items]
    return lambda ctx: value


def _param_text(value: Any) -> Any:
    return str(value).lower() if isinstance(value, bool) else value


@dataclass
class CursorState:
    """The last cursor value yielded and the keys yielded at exactly that value (sorted sources)."""

    cursor: Any = None
    keys: set = field(default_factory=set)

    @classmethod
    def from_position(cls, position: dict | None) -> "CursorState":
        if not position or position.get("cursor") is None:
            return cls()
        return cls(decode(position["cursor"]), {tuple(k) if isinstance(k, list) else k for k in position["keys"]})

    def already_yielded(self, cursor: Any, key: Any) -> bool:
        return cursor is not None and cursor == self.cursor and key in self.keys

    def advance(self, cursor: Any, key: Any) -> None:
        if cursor is None:
            return
        if cursor != self.cursor:
            self.cursor, self.keys = cursor, set()
        self.keys.add(key)

    def position(self) -> dict:
        keys = sorted((list(k) if isinstance(k, tuple) else k for k in self.keys), key=str)
        return {"cursor": encode(self.cursor), "keys": keys}


class HttpSource:
    def __init__(self, spec: Spec):
        self.spec = spec
        o = spec.source.options
        self.options = o
        self.base_url = str(o["base_url"]).rstrip("/")
        self.auth = Auth.from_options(o.get("auth"), spec.path)
        self.metrics = SourceMetrics()
        rate = o.get("rate_limit") or {}
        self.limiter = RateLimiter(rate.get("per_second"), rate.get("burst"))
        self.client = HttpClient(self.auth, RetryPolicy.from_options(o.get("retries")), self.limiter,
                                 self.metrics, float(o.get("timeout", 30)), spec.name)
        req = o["request"]
        self.method = str(req.get("method", "GET")).upper()
        self.path = compile_template(req.get("path", ""))
        self.params = compile_template(req.get("params") or {})
        self.headers = compile_template(req.get("headers") or {})
        self.json_text = isinstance(req.get("json"), str)
        self.body = compile_template(req.get("json")) if req.get("json") is not None else None
        self.records_expr = str(o["records"])
        self.records = jmespath.compile(self.records_expr).search
        self.paginator = Paginator.from_options(o.get("pagination"), self.base_url, self.body is not None)
        self.cap = o.get("max_results_per_query")
        self.total = jmespath.compile(str(o["total"])).search if o.get("total") else None
        self.max_pages = int(o.get("max_pages", DEFAULT_MAX_PAGES))
        self.sorted = bool(o.get("sorted_by_cursor", False))
        self.cursor = CursorReader.for_spec(spec)
        self.key = key_getter(spec)
        self.pages = 0

    # -- requests --------------------------------------------------------------------------------
    def first_call(self, since: Any, until: Any) -> Call:
        ctx = {"since": since, "until": until, "window": since is not None or until is not None}
        params = {k: _param_text(v) for k, v in self.params(ctx).items() if v not in (None, "")}
        headers = {k: str(v) for k, v in self.headers(ctx).items() if v not in (None, "")}
        body = None
        if self.body is not None:
            body = self.body(ctx)
            if self.json_text:
                try:
                    body = json.loads(body)
                except ValueError as e:
                    raise HttpSourceError(f"{self.spec.name}: request.json did not render to valid JSON "
                                          f"({e}):\n{body}") from None
        path = str(self.path(ctx))
        url = path if "://" in path else f"{self.base_url}/{path.lstrip('/')}"
        return self.paginator.first(Call(self.method, url, params, body, headers))

    def _page(self, call: Call) -> tuple[requests.Response, Any, list[dict]]:
        self.pages += 1
        if self.pages > self.max_pages:
            raise HttpSourceError(f"{self.spec.name}: more than max_pages={self.max_pages} pages in one run "
                                  f"(at {call.display(self.auth)}); raise max_pages if that is expected")
        resp = self.client.send(call)
        self.metrics.extra["pages"] = self.pages
        self.metrics.extra["rate_limit_wait_seconds"] = round(self.limiter.waited, 2)
        where = f"page {call.page} of {call.display(self.auth)}"
        try:
            body = resp.json()
        except ValueError as e:
            raise HttpSourceError(f"{self.spec.name}: {where}: the response is not valid JSON ({e}; "
                                  f"{len(resp.content)} bytes, HTTP {resp.status_code})") from None
        records = self.records(body)
        if records is None:
            keys = sorted(body) if isinstance(body, dict) else type(body).__name__
            raise HttpSourceError(f"{self.spec.name}: {where}: no records at '{self.records_expr}' in the "
                                  f"response (top-level keys: {keys})")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise HttpSourceError(f"{self.spec.name}: {where}: '{self.records_expr}' is not a list of "
                                  f"objects")
        return resp, body, records

    # -- streaming -------------------------------------------------------------------------------
    def chunks(self, window: Window, position: dict | None, limit: int = 0) -> Iterator[Chunk]:
        state = CursorState.from_position(position) if self.sorted else CursorState()
        if position and not self.sorted:
            log.info("%s: resuming from the start (an unsorted HTTP source has no exact checkpoint)",
                     self.spec.name)
        yield from chunked(self._stream(window, state), self._position(state),
                           self.spec.source.chunk_size, limit)

    def _position(self, state: CursorState) -> Callable[[], dict]:
        if self.sorted:
            return state.position
        return lambda: {"pages": self.pages}

    def _stream(self, window: Window, state: CursorState) -> Iterator[dict]:
        since = window.since
        if state.cursor is not None and (since is None or state.cursor > since):
            since = state.cursor
        while True:
            self.metrics.queries += 1
            restart = yield from self._query(window, since, state)
            if not restart:
                return
            if state.cursor is None or (since is not None and state.cursor <= since):
                raise HttpSourceError(
                    f"{self.spec.name}: more than max_results_per_query={self.cap} records share the cursor "
                    f"value {state.cursor}; the API cannot list them all")
            self.metrics.extra["query_restarts"] = self.metrics.extra.get("query_restarts", 0) + 1
            log.info("%s: %d-result cap reached; restarting the query from cursor %s",
                     self.spec.name, self.cap, state.cursor)
            since = state.cursor

    def _query(self, window: Window, since: Any, state: CursorState):
        """Records of one query, page by page; returns True when it stopped at the result cap."""
        call: Call | None = self.first_call(since, window.until)
        seen = 0
        while call is not None:
            resp, body, records = self._page(call)
            seen += len(records)
            for rec in records:
                c = self.cursor(rec)
                if self.cursor.enabled and not in_window(c, window, self.spec.source.null_cursor):
                    self.metrics.extra["outside_window"] = self.metrics.extra.get("outside_window", 0) + 1
                    continue
                if self.sorted:
                    k = self.key(rec)
                    if state.already_yielded(c, k):
                        continue
                    if c is not None and state.cursor is not None and c < state.cursor:
                        raise HttpSourceError(
                            f"{self.spec.name}: page {call.page} of {call.display(self.auth)}: records are not "
                            f"in ascending cursor order ({c} after {state.cursor}); sorted_by_cursor needs "
                            f"the request to sort by {self.spec.source.cursor} ascending")
                    state.advance(c, k)
                yield rec
            nxt = self.paginator.following(call, resp, body, len(records))
            if nxt is not None and self.cap and seen + len(records) > self.cap:
                return True
            call = nxt
        return False

    # -- the rest of the Source protocol -----------------------------------------------------------
    def count(self, window: Window) -> int | None:
        """The API's own count of the window (spec `total:`), from one request for the first page."""
        if self.total is None:
            return None
        _, body, _ = self._page(self.first_call(window.since, window.until))
        self.pages = 0  # the real pass starts its page count (and max_pages) afresh
        value = self.total(body)
        return int(value) if isinstance(value, (int, float, str)) and str(value).isdigit() else None

    def describe(self, window: Window) -> dict:
        call = self.first_call(window.since, window.until)
        return {"request": call.display(self.auth), "json": json.loads(redact(json.dumps(call.json))),
                "auth": self.auth.label, "records": self.records_expr,
                "pagination": self.paginator.type, "rate_limit_per_second": self.limiter.per_second,
                "max_results_per_query": self.cap}

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return redact(f"HttpSource({self.base_url})")
