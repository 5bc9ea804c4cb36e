"""HTTP source: any JSON API described by the spec alone (base URL, auth, request templates, the
record list as a jmespath, a pagination style, a rate budget, a retry policy).

The request's path, params, headers and JSON body are Jinja templates that see the delta window as
`since` / `until` (UTC datetimes or None; filters `epoch_ms`, `epoch_s`, `iso`, `http_date`), `window` (true when
bounded) and `since_exclusive` (true when every record at exactly `since` was read: ask for cursor >
since). A param that renders empty is not sent, so one template can serve full and delta runs.
Records outside the window are also dropped client-side when the spec has a cursor.

`sorted_by_cursor: true` declares that the request returns records in ascending cursor order. The
source then keeps its place (cursor.py), which gives exact resume after a crash and a way past
result caps (`max_results_per_query`, HubSpot search's 10,000): instead of paging into the refusal
it re-runs the query from the last cursor value. When more records than the cap may share one value
(a bulk import stamps one millisecond on thousands), the spec's `tie_break` request lists the records
at that value (`tie_value`) by key after `after_key`, and the main query then goes on past it.

A sorted source also starts each next page as a fresh query from the last cursor value read
(`next_page: from_cursor`, its default) instead of following the pagination: an API that pages by
offset (HubSpot search's `after`) shifts every later record one place earlier when a record read
earlier is modified during the run and moves to the end, so the record at the next page boundary
would be skipped. The fresh query asks for cursor >= the last value and drops the keys already read
at it; a page whose records all share one value goes on with the tie_break listing, itself paged
by key. The moved record is read again at its new place (an upsert: it lands once).
`next_page: pagination` keeps following the API's pages, for APIs where a query costs too much."""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterator

import jmespath
import requests

from syncrunner.core.mapping import make_getter
from syncrunner.core.records import Chunk
from syncrunner.core.redact import redact
from syncrunner.core.requests import RequestTemplate, context, dates
from syncrunner.core.window import Window
from syncrunner.sources.base import SourceMetrics
from syncrunner.sources.http.auth import Auth
from syncrunner.sources.http.client import Call, HttpClient, HttpSourceError, RateLimiter, RetryPolicy
from syncrunner.sources.http.cursor import CursorState, key_order
from syncrunner.sources.http import xmlresponse
from syncrunner.sources.http.foreach import ForEach
from syncrunner.sources.http.pagepool import page_pool
from syncrunner.sources.http.paging import Paginator, paginator
from syncrunner.sources.http.ratelimit import RateHeaders
from syncrunner.sources.http.records import RecordsAt, RecordsError
from syncrunner.sources.http.rows import RowsError, RowTable
from syncrunner.sources.http.xmlresponse import XmlRecords
from syncrunner.sources.streaming import CursorReader, chunked, in_window, key_getter
from syncrunner.spec.model import Spec
from syncrunner.spec.params import as_config as params_config

log = logging.getLogger("syncrunner.http")
DEFAULT_MAX_PAGES = 100_000
DONE, CAP, REQUERY, TIE = "done", "cap", "requery", "tie"  # how one query of _query ended

class HttpSource:
    def __init__(self, spec: Spec):
        self.spec = spec
        o = spec.source.options
        self.options = o
        self.base_url = str(o["base_url"]).rstrip("/")
        self.auth = Auth.from_options(o.get("auth"), spec.path)
        self.metrics = SourceMetrics()
        self.xml = XmlRecords.from_options(str(o["records"]), o.get("xml")) if o.get("format") == "xml" else None
        rate = o.get("rate_limit") or {}
        self.limiter = RateLimiter(rate.get("per_second"), rate.get("burst"),
                                   RateHeaders.from_options(rate.get("headers")))
        self.client = HttpClient(self.auth, RetryPolicy.from_options(o.get("retries")), self.limiter,
                                 self.metrics, float(o.get("timeout", 30)), spec.name,
                                 xmlresponse.explain if self.xml else None)
        if self.xml:
            self.client.session.headers["Accept"] = "text/xml, application/soap+xml"
        self.request = RequestTemplate({"method": "GET", **o["request"]}, spec.name)
        self.tie = RequestTemplate(o["tie_break"], spec.name, "tie_break") if o.get("tie_break") else None
        self.records = self.xml or RecordsAt.from_options(o)
        self.rows = RowTable.from_options(o.get("rows"))
        self.paginator = paginator(o.get("pagination"), self.base_url, self.request.body is not None)
        self.concurrency = int((o.get("pagination") or {}).get("concurrency", 1))
        self.pool = page_pool(self.client.send_json, self.paginator.ahead, self.concurrency)
        self.cap = o.get("max_results_per_query")
        self.total = jmespath.compile(str(o["total"])).search if o.get("total") else None
        self.max_pages = int(o.get("max_pages", DEFAULT_MAX_PAGES))
        self.sorted = bool(o.get("sorted_by_cursor", False))
        self.from_cursor = self.sorted and o.get("next_page", "from_cursor") == "from_cursor"
        self.params = spec.param_values
        self.gone_statuses = set(o.get("skip_parent_on") or ())
        self.for_each = ForEach(o["for_each"], self.base_url, spec.name) if o.get("for_each") else None
        self.cursor = CursorReader.for_spec(spec)
        self.key = key_getter(spec)
        self.key_order = key_order(spec)
        self.pages = 0
        self._where: Call | None = None  # the call whose page is being read, for messages

    # -- requests --------------------------------------------------------------------------------
    def first_call(self, ctx: dict, tie: bool = False, over: RequestTemplate | None = None) -> Call:
        """The first call of a query: the request, with the tie_break (or `over`) on top."""
        return self.call_for(self.request, self.paginator, ctx, self.tie if tie else over)

    def call_for(self, request: RequestTemplate, paginator: Paginator, ctx: dict,
                 over: RequestTemplate | None = None) -> Call:
        """The first call of a request (the main one, a for_each level's), `over`'s parts on top."""
        parts = request.render(ctx)
        if over is not None:
            parts = parts.under(over.render(ctx))
        path = parts.path or ""
        url = path if "://" in path else f"{self.base_url}/{path.lstrip('/')}"
        # numbered within the run (a sorted source starts a fresh query for every page)
        return paginator.first(Call(parts.method or "GET", url, parts.params, parts.body, parts.headers,
                                    page=self.pages + 1, data=parts.data))

    def ctx(self, window: Window, since: Any, until: Any, **kw: Any) -> dict:
        """The template context of a request of this run: its window's bounds and dates, and its
        parameters."""
        return context(since, until, params=self.params, **dates(window), **kw)

    def _page(self, call: Call, records: RecordsAt | None = None, pooled: bool = True
              ) -> tuple[requests.Response, Any, list[dict]]:
        """One page: its response, body and records (where `records` says, default the spec's).
        `pooled`: through the page pool (a for_each level's listing is not what it guesses)."""
        listing = records or self.records
        self.pages += 1
        if self.pages > self.max_pages:
            raise HttpSourceError(f"{self.spec.name}: more than max_pages={self.max_pages} pages in one run "
                                  f"(at {call.display(self.auth)}); raise max_pages if that is expected")
        if self.xml is not None:
            return self._xml_page(call)
        pooled = pooled and self.pool is not None
        resp, body = self.pool.send(call) if pooled else self.client.send_json(call)
        self.metrics.extra["pages"] = self.pages
        self.metrics.extra["rate_limit_wait_seconds"] = round(self.limiter.waited, 2)
        where = f"page {call.page} of {call.display(self.auth)}"
        try:
            if self.rows is not None:  # arrays of cells under a header row (rows.py)
                records = self.rows.records(listing.search(body), self.spec, where)
                self.metrics.extra.update(self.rows.counts)
            else:
                records = listing.read(body)
        except RecordsError as e:
            raise HttpSourceError(f"{self.spec.name}: {where}: {e}") from None
        except RowsError as e:
            raise HttpSourceError(str(e)) from None
        return resp, body, records

    def _xml_page(self, call: Call) -> tuple[requests.Response, Any, list[dict]]:
        """An XML response, its root element and records (xmlresponse.py: no DTD, SOAP faults); a
        body that is not well-formed is retried like a cut-off JSON page."""
        where = f"page {call.page} of {call.display(self.auth)}"
        try:
            resp, root = self.client.send_decoded(call, xmlresponse.decoder(lambda e: HttpSourceError(
                f"{self.spec.name}: {where}: {e}")))
            self.metrics.extra["pages"] = self.pages
            return resp, root, self.xml.read(root)
        except xmlresponse.XmlRefused as e:
            raise HttpSourceError(f"{self.spec.name}: {where}: {e}") from None

    # -- streaming -------------------------------------------------------------------------------
    def chunks(self, window: Window, position: dict | None, limit: int = 0) -> Iterator[Chunk]:
        state = CursorState.from_position(position) if self.sorted else CursorState()
        if position and not self.sorted and self.for_each is None:
            log.info("%s: resuming from the start (an unsorted HTTP source has no exact checkpoint)",
                     self.spec.name)
        stream = self._stream(window, state) if self.for_each is None else self._per_parent(window, position)
        yield from chunked(stream, self._position(state),
                           self.spec.source.chunk_size, limit)
        if self.pool is not None:
            self.pool.drop_guesses()
            self.metrics.extra.update(page_concurrency=self.concurrency, pages_fetched_unused=self.pool.wasted)

    def _position(self, state: CursorState) -> Callable[[], dict]:
        if self.sorted:
            return lambda: state.position(self.key_order)
        if self.for_each is not None:
            return self.for_each.position
        return lambda: {"pages": self.pages}

    def _stream(self, window: Window, state: CursorState) -> Iterator[dict]:
        """Main queries, restarted from the last cursor value (each page, or at the cap), and tie
        listings between them (cursor.py)."""
        while True:
            self.metrics.queries += 1
            if state.tie:
                before = state.after_key
                call = self.first_call(self.ctx(window, window.since, window.until, tie_value=state.cursor,
                                                after_key=state.after_key), tie=True)
                self._count("tie_break_queries")
                ended = yield from self._query(call, self._accept_tie(state), self._tie_next)
                if ended == DONE:
                    state.end_tie()
                elif state.after_key == before:
                    raise HttpSourceError(f"{self.spec.name}: the tie_break request at cursor value "
                                          f"{state.cursor} returned a full page without passing a key")
                continue
            since, exclusive = state.since(window.since)
            call = self.first_call(self.ctx(window, since, window.until, since_exclusive=exclusive))
            ended = yield from self._query(call, self._accept(window, state), self._main_next(state))
            if ended == DONE:
                return
            if ended == CAP:
                self._at_cap(since, state)
            elif ended == TIE:
                state.start_tie()
            else:
                self._count("page_requeries")

    def _per_parent(self, window: Window, position: dict | None) -> Iterator[dict]:
        """for_each: the main request once per parent, each record with its parent's fields."""
        fe, accept = self.for_each, self._accept(window, CursorState())
        for fe.index, fe.current in fe.resumed(self._listing, lambda p: self.ctx(window, window.since, window.until,
                                                                                  parent=p), position):
            self.metrics.queries += 1
            call = self.first_call(self.ctx(window, window.since, window.until, parent=fe.current))
            try:
                for rec in self._query(call, accept, None):
                    rec["parent"] = fe.current
                    yield rec
            except HttpSourceError as e:
                if e.status not in self.gone_statuses:
                    raise
                self._count("parents_gone")
                log.warning("%s: parent %s is gone (HTTP %s): skipped", self.spec.name, fe.current, e.status)

    def _listing(self, request: RequestTemplate, paginator: Paginator, records: RecordsAt,
                 ctx: dict) -> Iterator[dict]:
        """A for_each level's records (its parents), page by page."""
        call: Call | None = self.call_for(request, paginator, ctx)
        while call is not None:
            resp, body, found = self._page(call, records, pooled=False)
            self._count("parent_pages")
            yield from found
            call = paginator.following(call, resp, body, len(found))

    def _main_next(self, state: CursorState) -> Callable[[list[dict]], str | None] | None:
        """After a full page of a main query (from_cursor): query again from the last cursor value,
        or list that value by key when the whole page shares it (a fresh query from it could return
        the same page). None: follow the pagination (no value to start from, or no tie_break)."""
        if not self.from_cursor:
            return None

        def decide(records: list[dict]) -> str | None:
            last = self.cursor(records[-1])
            if last is None or last != state.cursor:  # the last record was not taken (window)
                return None
            if self.cursor(records[0]) != last:
                return REQUERY
            return TIE if self.tie is not None else None
        return decide

    def _tie_next(self, records: list[dict]) -> str | None:
        """A tie listing's next page is a fresh listing after the last key read (from_cursor)."""
        return REQUERY if self.from_cursor else None

    def _at_cap(self, since: Any, state: CursorState) -> None:
        """The query stopped at the result cap: list the last value's records by key (tie_break) or
        restart the query from that value."""
        self._count("query_restarts")
        if state.cursor is None:
            raise HttpSourceError(f"{self.spec.name}: max_results_per_query={self.cap} reached before any "
                                  f"record had a cursor value to restart from")
        if self.tie is not None:
            log.info("%s: %d-result cap reached; listing the records at cursor %s by key (tie_break)",
                     self.spec.name, self.cap, state.cursor)
            state.start_tie()
            return
        if since is not None and state.cursor <= since:
            raise HttpSourceError(
                f"{self.spec.name}: more than max_results_per_query={self.cap} records share the cursor "
                f"value {state.cursor}; the API cannot list them all with this request (a tie_break "
                f"request that lists one cursor value by key can)")
        log.info("%s: %d-result cap reached; restarting the query from cursor %s",
                 self.spec.name, self.cap, state.cursor)

    def _query(self, call: Call, accept: Callable[[dict], bool],
               after_page: Callable[[list[dict]], str | None] | None):
        """The records of one query that `accept` lets through, page by page. Returns DONE (no more
        pages), CAP (the next page would reach past the result cap), or what `after_page` says
        about a page that has a next one (REQUERY, TIE; None: follow the pagination)."""
        seen, previous = 0, None
        while call is not None:
            resp, body, records = self._page(call)
            keys = [self.key(r) for r in records]
            if keys and keys == previous:
                self._repeated(call)
                return DONE
            seen, previous = seen + len(records), keys
            self._where = call
            for rec in records:
                if accept(rec):
                    yield rec
            nxt = self.paginator.following(call, resp, body, len(records))
            if nxt is None:
                self._check_cut(seen)
                return DONE
            ended = after_page(records) if after_page is not None else None
            if ended is not None:
                return ended
            if self.cap and seen + len(records) > self.cap:
                return CAP
            call = nxt
        return DONE

    def _repeated(self, call: Call) -> None:
        """A page with exactly the records of the page before: the API ignores the page parameter
        and answers everything (or the same page) each time. Going on would loop; every record of
        it has been read."""
        self._count("repeated_pages")
        log.warning("%s: page %d of %s repeats the page before record for record: the API ignores "
                    "the paging parameter; stopping this listing there", self.spec.name, call.page,
                    call.display(self.auth))

    def _check_cut(self, seen: int) -> None:
        """An unsorted source cannot restart at the result cap: a query that reached it may have
        been cut short by the API (Five9 getContactRecords returns at most 1,000 records)."""
        if self.cap and not self.sorted and seen >= self.cap:
            raise HttpSourceError(
                f"{self.spec.name}: {self._at()}: the query returned {seen} records, the API's cap "
                f"(max_results_per_query={self.cap}); it may have left records out. Narrow the request "
                f"(a smaller window: --start-date/--end-date, or narrower lookup criteria)")

    def _accept(self, window: Window, state: CursorState) -> Callable[[dict], bool]:
        """A main query's record test: in the window, and (sorted) not yielded yet and in order."""
        def accept(rec: dict) -> bool:
            c = self.cursor(rec)
            if self.cursor.enabled and not in_window(c, window, self.spec.source.null_cursor):
                self._count("outside_window")
                return False
            if not self.sorted:
                return True
            k = self.key(rec)
            if state.already_yielded(c, k):
                return False
            if c is not None and state.cursor is not None and (
                    c < state.cursor or (c == state.cursor and state.exclusive)):
                raise HttpSourceError(
                    f"{self.spec.name}: {self._at()}: records are not in ascending cursor order ({c} "
                    f"{'after' if c < state.cursor else 'again after reading every record at'} "
                    f"{state.cursor}); sorted_by_cursor needs the request to sort by "
                    f"{self.spec.source.cursor} ascending, and to ask for > since when since_exclusive")
            state.advance(c, k)
            return True
        return accept

    def _accept_tie(self, state: CursorState) -> Callable[[dict], bool]:
        """A tie listing's record test: at the tied value, keys ascending, not yielded by the main query."""
        def accept(rec: dict) -> bool:
            c, k = self.cursor(rec), self.key(rec)
            if c != state.cursor:
                raise HttpSourceError(f"{self.spec.name}: {self._at()}: the tie_break request returned a "
                                      f"record with cursor {c}, not the tied value {state.cursor}; it must "
                                      f"ask for {self.spec.source.cursor} equal to tie_value")
            if state.after_key is not None and not self.key_order(k) > self.key_order(state.after_key):
                raise HttpSourceError(f"{self.spec.name}: {self._at()}: the tie_break request returned key "
                                      f"{k} after {state.after_key}; it must ask for keys > after_key, "
                                      f"sorted by key ascending")
            state.after_key = k
            return k not in state.keys
        return accept

    def _at(self) -> str:
        call = self._where
        return f"page {call.page} of {call.display(self.auth)}"

    def _count(self, name: str) -> None:
        self.metrics.extra[name] = self.metrics.extra.get(name, 0) + 1

    # -- the id listing of a mark-and-sweep (deletes.mode: mark_and_sweep) ----------------------------
    def ids(self) -> Iterator[list[tuple]]:
        """Every record's source key, one list per page: the spec's request (no window) with
        `deletes.ids.request` on top, its records at `deletes.ids.records`, each key at the paths
        `deletes.ids.key` (defaults: the source's own request, records and key)."""
        o = self.spec.deletes.ids or {}
        ids_request = RequestTemplate(o["request"], self.spec.name, "deletes.ids.request") if o.get("request") else None
        listing = RecordsAt(o["records"], jmespath.compile(o["records"]).search) if o.get("records") else None
        paths = o.get("key", self.spec.source.key)
        getters = [make_getter(p) for p in ([paths] if isinstance(paths, str) else paths)]
        call: Call | None = self.first_call(context(None, None, params=self.params), over=ids_request)
        while call is not None:
            resp, body, records = self._page(call, listing)
            yield [tuple(g(rec) for g in getters) for rec in records]
            call = self.paginator.following(call, resp, body, len(records))

    # -- the rest of the Source protocol -----------------------------------------------------------
    def count(self, window: Window) -> int | None:
        """The API's own count of the window (spec `total:`), from one request for the first page."""
        if self.total is None or self.for_each is not None:
            return None
        _, body, _ = self._page(self.first_call(self.ctx(window, window.since, window.until)))
        self.pages = 0  # the real pass starts its page count (and max_pages) afresh
        value = self.total(body)
        return int(value) if isinstance(value, (int, float, str)) and str(value).isdigit() else None

    def describe(self, window: Window) -> dict:
        call = self.first_call(self.ctx(window, window.since, window.until, parent=_Placeholders()))
        body = {"xml": redact(call.data)} if call.data is not None else {
            "json": json.loads(redact(json.dumps(call.json)))}
        return {"request": call.display(self.auth), "headers": json.loads(redact(json.dumps(call.headers))),
                **body, "auth": self.auth.label, "records": self.records.expr,
                "pagination": self.paginator.type, "page_concurrency": self.concurrency,
                "rows": self.spec.source.options.get("rows"),
                "rate_limit_per_second": self.limiter.per_second,
                "max_results_per_query": self.cap, "tie_break": self.tie is not None,
                **({"for_each": self._describe_parents(window)} if self.for_each is not None else {}),
                **({"params": params_config(self.params)} if self.params else {})}

    def _describe_parents(self, window: Window) -> list:
        """Each for_each level: its literal parents, or its first request (outer parents as placeholders)."""
        out = []
        for i, lv in enumerate(self.for_each.levels):
            if lv.items is not None:
                out.append({"items": lv.items})
                continue
            ctx = self.ctx(window, window.since, window.until, parent=_Placeholders() if i else None)
            out.append({"request": self.call_for(lv.request, lv.paginator, ctx).display(self.auth),
                        "records": lv.records.expr})
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        self.client.log_retry_summary()
        self.client.close()

    def __repr__(self) -> str:
        return redact(f"HttpSource({self.base_url})")


class _Placeholders(dict):
    """`parent` for describing a for_each request (plan): each field shows as {parent.NAME}."""

    def __missing__(self, key: str) -> str:
        return f"{{parent.{key}}}"
