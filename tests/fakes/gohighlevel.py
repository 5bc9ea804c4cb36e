"""In-process fake of the HighLevel (GoHighLevel / LeadConnector) API v2: opportunities, contacts.

Pages followed (the vendor's own OpenAPI files and help pages):
  * https://github.com/GoHighLevel/highlevel-api-docs  ``apps/opportunities.json`` (GET
    /opportunities/search) and ``apps/contacts.json`` (GET /contacts/, marked deprecated in favour
    of POST /contacts/search), ``common/common-schemas.json`` (error DTOs); server
    https://services.leadconnectorhq.com; rendered at https://marketplace.gohighlevel.com/docs/
  * Rate limits: https://help.gohighlevel.com/support/solutions/articles/48001060529-highlevel-api
    and ``docs/oauth/Authorization.md`` in the same repository.
  * Live 401/403 bodies quoted in https://github.com/GoHighLevel/highlevel-api-docs/issues/213 .

Facts modelled:
  * Auth: ``Authorization: Bearer <token>`` (Private Integration Token or OAuth access token of a
    sub-account) and a required ``Version: 2021-07-28`` header (the only enum value in both files).
    A token reaches only its own location(s); another ``locationId`` answers 403 with
    ``{"statusCode": 403, "message": "The token does not have access to this location."}``.
    A bad token answers 401 ``{"statusCode": 401, "message": "Invalid JWT"}`` (issue 213).
  * ``GET /opportunities/search``: ``location_id`` (snake case, required), ``limit`` (default 20,
    "maximum up to 100"), ``startAfter`` (epoch ms) + ``startAfterId``, legacy ``page``,
    ``status`` (open/won/lost/abandoned/all), ``pipeline_id``, ``pipeline_stage_id``,
    ``assigned_to``, ``contact_id``, ``q``, ``order`` (example ``added_asc``), ``date``/``endDate``
    (``mm-dd-yyyy``). Answer ``{"opportunities": [...], "meta": {total, nextPageUrl, startAfterId,
    startAfter, currentPage, nextPage, prevPage}, "aggregations": {}}``.
  * ``GET /contacts/``: ``locationId`` (camel case, required: the two endpoints spell it
    differently), ``limit`` (default 20, max 100), ``startAfterId`` + ``startAfter`` (ms), ``query``.
    Answer ``{"contacts": [...], "count": <total>, "meta": {...same keys...}}``.
  * Timestamps: ISO 8601 UTC with milliseconds and ``Z`` (``2021-08-03T04:55:17.355Z``); the cursor
    value ``startAfter`` is the same instant in epoch milliseconds.
  * Rate limits per app per location: burst 100 requests per 10 s, daily 200,000. Every answer
    carries ``X-RateLimit-Limit-Daily``, ``X-RateLimit-Daily-Remaining``,
    ``X-RateLimit-Interval-Milliseconds``, ``X-RateLimit-Max``, ``X-RateLimit-Remaining``. Both
    budgets are constructor arguments so tests can use small ones.
  * Errors: 400/401/422 DTOs ``{"statusCode", "message", "error"}``; 422 ``message`` is a list.

Where the docs are silent (choices made here):
  * Sort: newest first by creation time (``added_desc``), ties broken by id ascending;
    ``order=added_asc`` reverses the time order. The cursor is the pair (startAfter, startAfterId):
    the next page starts strictly after that pair, so deletions and inserts never shift pages.
    ``startAfter`` alone skips every record sharing that millisecond (trap: bulk imports share
    creation times); ``startAfterId`` of a record that no longer exists, without ``startAfter``,
    answers 400.
  * Last page: ``startAfter``/``startAfterId`` still name its last record, ``nextPage`` and
    ``nextPageUrl`` are null; asking again with that cursor returns an empty list with null cursor.
    ``nextPageUrl`` repeats the request's parameters with the new cursor (the documented example
    lists every filter, empty or not, on an internal ``localhost:5066`` host: this fake uses its
    own host, a real response may not).
  * ``limit`` above 100 answers 422 (class-validator style message) rather than being capped.
  * Missing or unknown ``Version`` answers 400 ``Version header is missing or not supported``.
  * 429 body ``{"statusCode": 429, "message": "Too Many Requests"}``; no ``Retry-After`` (not
    documented; the X-RateLimit-* headers are the signal). A scripted 429 (``inject``) models the
    burst spent by another client of the same location: the same headers, ``X-RateLimit-Remaining: 0``. The daily window is a fixed 24 h window
    from the first request; no header says when it resets.
  * No updated-since filter exists on these two GET endpoints: a delta can only re-walk and compare
    (``updatedAt``/``dateUpdated`` move on every change); deletions are visible only as ids that stop
    appearing (mark-and-sweep, reference note 001).
  * Default ``status`` is all statuses.
"""

from __future__ import annotations

import bisect
import random
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable
from urllib.parse import urlencode

from .restkit import BadRequest, ScriptedFake, WindowBudget, epoch_ms, int_arg, iso_millis_z
from .server import Faults, Request, Response, as_utc, route

API_VERSION = "2021-07-28"
MAX_LIMIT = 100
DEFAULT_LIMIT = 20
STATUSES = ("open", "won", "lost", "abandoned")
FILTER_PARAMS = ("status", "pipeline_id", "pipeline_stage_id", "assigned_to", "contact_id", "id", "q",
                 "date", "endDate")
FIRST = ["Ana", "Ben", "Chloé", "Dev", "Eve", "Farah", "Gus", "Hana"]
LAST = ["Smith", "García", "Nguyen", "O'Neil", "Okafor", "Müller"]


@dataclass
class GhlRecord:
    """One opportunity or contact; ``body`` holds the API fields except the timestamps."""

    id: str
    created: datetime
    updated: datetime
    body: dict[str, Any] = field(default_factory=dict)


class _Index:
    """Records of one kind with cached sorted views for cursor paging (dropped on any change)."""

    def __init__(self) -> None:
        self.rows: dict[str, GhlRecord] = {}
        self._views: dict[bool, tuple[list[GhlRecord], list[tuple[int, str]]]] = {}

    def changed(self) -> None:
        self._views.clear()

    def view(self, descending: bool) -> tuple[list[GhlRecord], list[tuple[int, str]]]:
        """Records in creation order (newest first when ``descending``), ties by id ascending,
        with their sort keys for bisecting a cursor."""
        if descending not in self._views:
            keyed = sorted((_key(r, descending), r.id) for r in self.rows.values())
            self._views[descending] = ([self.rows[k[1]] for k in keyed], [k for k in keyed])
        return self._views[descending]


def _key(rec: GhlRecord, descending: bool) -> int:
    ms = epoch_ms(rec.created)
    return -ms if descending else ms


class FakeGoHighLevel(ScriptedFake):
    """Fake HighLevel v2 for the locations a token may reach."""

    def __init__(self, token: str = "pit-test", location_id: str = "ve9EPM428h8vShlRW1KT", *,
                 faults: Faults | None = None, burst_max: int = 100, burst_window_s: float = 10.0,
                 daily_limit: int = 200_000, data_seed: int = 1) -> None:
        super().__init__(faults)
        self.token, self.location_id = token, location_id
        self.burst_max, self.burst_window_s, self.daily_limit = burst_max, burst_window_s, daily_limit
        self.opportunities, self.contacts = _Index(), _Index()
        self._budgets: dict[str, tuple[WindowBudget, WindowBudget]] = {}
        self._rng = random.Random(data_seed)

    # ----- test-side data API ------------------------------------------------
    def _new_id(self) -> str:
        return "".join(self._rng.choice(string.ascii_letters + string.digits) for _ in range(20))

    def add_opportunity(self, created: datetime, **fields: Any) -> GhlRecord:
        rec = GhlRecord(self._new_id(), as_utc(created), as_utc(created), self._opportunity(fields))
        self.opportunities.rows[rec.id] = rec
        self.opportunities.changed()
        return rec

    def add_contact(self, created: datetime, **fields: Any) -> GhlRecord:
        rec = GhlRecord(self._new_id(), as_utc(created), as_utc(created), self._contact(fields))
        self.contacts.rows[rec.id] = rec
        self.contacts.changed()
        return rec

    def seed_opportunities(self, n: int, start: datetime, step: timedelta = timedelta(minutes=7),
                           same_time_every: int = 0) -> list[str]:
        """``n`` opportunities from ``start``; with ``same_time_every=k`` each run of k shares one
        creation millisecond (what a bulk import produces)."""
        ids = []
        for i in range(n):
            slot = i // same_time_every if same_time_every else i
            ids.append(self.add_opportunity(start + step * slot).id)
        return ids

    def seed_contacts(self, n: int, start: datetime, step: timedelta = timedelta(minutes=5)) -> list[str]:
        return [self.add_contact(start + step * i).id for i in range(n)]

    def touch(self, kind: str, ids: Iterable[str], when: datetime, **changes: Any) -> None:
        index = self._kind(kind)
        for rid in ids:
            rec = index.rows[rid]
            rec.updated = as_utc(when)
            rec.body.update(changes)

    def delete(self, kind: str, ids: Iterable[str]) -> None:
        index = self._kind(kind)
        for rid in ids:
            index.rows.pop(rid, None)
        index.changed()

    def ids(self, kind: str) -> set[str]:
        return set(self._kind(kind).rows)

    def _kind(self, kind: str) -> _Index:
        return {"opportunities": self.opportunities, "contacts": self.contacts}[kind]

    def _opportunity(self, fields: dict[str, Any]) -> dict[str, Any]:
        r = self._rng
        first, last = r.choice(FIRST), r.choice(LAST)
        body = {
            "name": f"{first} {last} - roof", "monetaryValue": r.choice([0, 500, 1250.5, 9800]),
            "pipelineId": "VDm7RPYC2GLUvdpKmBfC", "pipelineStageId": r.choice(["stage-new", "stage-quoted", "stage-won"]),
            "assignedTo": r.choice(["zT46WSCPbudrq4zhWMk6", None]), "status": r.choice(STATUSES),
            "source": r.choice(["", "facebook", "door knock"]), "lostReasonId": None,
            "contactId": self._new_id(), "locationId": self.location_id, "indexVersion": 1,
            "contact": {"id": None, "name": f"{first} {last}", "companyName": None,
                        "email": f"{first.lower()}.{last.lower()}@example.com", "phone": "+12025550107", "tags": []},
            "notes": [], "tasks": [], "calendarEvents": [], "customFields": [], "followers": [],
        }
        body["contact"]["id"] = body["contactId"]
        return body | fields

    def _contact(self, fields: dict[str, Any]) -> dict[str, Any]:
        first, last = self._rng.choice(FIRST), self._rng.choice(LAST)
        body = {"locationId": self.location_id, "contactName": f"{first} {last}".lower(),
                "firstName": first, "lastName": last, "email": f"{first.lower()}@example.com",
                "phone": "+12025550107", "companyName": None, "source": "xyz form", "type": "lead",
                "timezone": "America/Chicago", "country": "US", "tags": [], "customFields": [],
                "attributions": [], "followers": []}
        return body | fields

    # ----- HTTP ------------------------------------------------------------
    def routes(self):
        return [route("GET", r"/opportunities/search", self._limited(self._search, "location_id")),
                route("GET", r"/contacts/?", self._limited(self._contacts, "locationId"))]

    def is_authorized(self, req: Request) -> bool:
        return req.headers.get("authorization", "") == f"Bearer {self.token}"

    def _error(self, status: int, message: Any, error: str | None = None) -> Response:
        body: dict[str, Any] = {"statusCode": status, "message": message}
        if error:
            body["error"] = error
        return Response(status, body)

    def unauthorized(self, req: Request) -> Response:
        return self._error(401, "Invalid JWT")

    def rate_limited(self, req: Request) -> Response:
        return self._error(429, "Too Many Requests")

    def server_error(self, req: Request, status: int) -> Response:
        return self._error(status, "Internal server error")

    def not_found(self, req: Request) -> Response:
        return self._error(404, f"Cannot GET {req.path}", "Not Found")

    def _with_retry_after(self, resp: Response) -> Response:
        """A scripted 429 (the burst spent by another client of the same app and location) carries
        what a real one does: no Retry-After (not documented), the X-RateLimit-* headers with nothing
        left in the burst window."""
        with self._lock:
            budgets = self._budgets.get(self.location_id)
        daily_left = budgets[1].peek_remaining() if budgets else self.daily_limit
        resp.headers.update({"X-RateLimit-Limit-Daily": str(self.daily_limit),
                             "X-RateLimit-Daily-Remaining": str(daily_left),
                             "X-RateLimit-Interval-Milliseconds": str(int(self.burst_window_s * 1000)),
                             "X-RateLimit-Max": str(self.burst_max), "X-RateLimit-Remaining": "0"})
        return resp

    def _limited(self, handler: Callable[[Request, str], Response], loc_param: str) -> Callable[[Request], Response]:
        """Version and location checks, then the per-location budgets, then the handler."""

        def wrapped(req: Request) -> Response:
            if req.headers.get("version") != API_VERSION:
                return self._error(400, "Version header is missing or not supported", "Bad Request")
            location = req.arg(loc_param)
            if not location:
                return self._error(422, [f"{loc_param} should not be empty"], "Unprocessable Entity")
            if location != self.location_id:
                return self._error(403, "The token does not have access to this location.")
            resp, headers = self._spend(location)
            if resp is None:
                try:
                    resp = handler(req, location)
                except BadRequest as exc:
                    resp = self._error(exc.status, [str(exc)] if exc.status == 422 else str(exc),
                                       "Unprocessable Entity" if exc.status == 422 else "Bad Request")
            resp.headers.update(headers)
            return resp

        return wrapped

    def _spend(self, location: str) -> tuple[Response | None, dict[str, str]]:
        with self._lock:
            if location not in self._budgets:
                self._budgets[location] = (WindowBudget(self.burst_max, self.burst_window_s),
                                           WindowBudget(self.daily_limit, 86_400.0))
            burst, daily = self._budgets[location]
        day_ok = daily.peek_remaining() > 0 and daily.take()[0]
        burst_ok, burst_left, _ = burst.take() if day_ok else (False, burst.peek_remaining(), 0.0)
        headers = {"X-RateLimit-Limit-Daily": str(self.daily_limit),
                   "X-RateLimit-Daily-Remaining": str(daily.peek_remaining()),
                   "X-RateLimit-Interval-Milliseconds": str(int(self.burst_window_s * 1000)),
                   "X-RateLimit-Max": str(self.burst_max),
                   "X-RateLimit-Remaining": str(burst_left)}
        if day_ok and burst_ok:
            return None, headers
        return self.rate_limited(Request("GET", "", {}, {}, b"", {}, "", 0)), headers

    # ----- endpoints -------------------------------------------------------
    def _search(self, req: Request, location: str) -> Response:
        limit = _limit(req)
        self.before_page("opportunities", int_arg(req, "page", 1))
        order = req.arg("order") or "added_desc"
        if order not in ("added_desc", "added_asc"):
            raise BadRequest("order must be one of added_asc, added_desc", 422)
        rows, keys = self.opportunities.view(descending=order == "added_desc")
        if any(req.arg(p) for p in FILTER_PARAMS):
            rows = [r for r in rows if _opportunity_matches(r, req)]
            keys = [(_key(r, order == "added_desc"), r.id) for r in rows]
        page_rows, meta = self._page(req, rows, keys, limit, "opportunities", order == "added_desc")
        body = [self._render(r, "createdAt", "updatedAt") for r in page_rows]
        return Response(200, {"opportunities": body, "meta": meta, "aggregations": {}},
                        page=meta["currentPage"])

    def _contacts(self, req: Request, location: str) -> Response:
        limit = _limit(req)
        self.before_page("contacts", int_arg(req, "page", 1))
        rows, keys = self.contacts.view(descending=True)
        query = (req.arg("query") or "").lower()
        if query:
            rows = [r for r in rows if query in (r.body.get("contactName") or "") or query in (r.body.get("email") or "")]
            keys = [(_key(r, True), r.id) for r in rows]
        page_rows, meta = self._page(req, rows, keys, limit, "contacts")
        body = [self._render(r, "dateAdded", "dateUpdated") for r in page_rows]
        return Response(200, {"contacts": body, "count": meta["total"], "meta": meta},
                        page=meta["currentPage"])

    def _page(self, req: Request, rows: list[GhlRecord], keys: list[tuple[int, str]], limit: int,
              entity: str, descending: bool = True) -> tuple[list[GhlRecord], dict[str, Any]]:
        """Cursor paging on (startAfter, startAfterId) in the order of ``rows``; ``page`` when no cursor."""
        page_no = int_arg(req, "page", 1)
        start = self._cursor_start(req, rows, keys, descending)
        if start is None:
            start = (page_no - 1) * limit
        chunk = rows[start:start + limit]
        more = start + limit < len(rows)
        last = chunk[-1] if chunk else None
        cursor = {"startAfter": epoch_ms(last.created), "startAfterId": last.id} if last else {}
        next_url = None
        if more and last:  # the request's own parameters, with the cursor of this page
            query = {k: v[0] for k, v in req.query.items() if k not in ("page", "startAfter", "startAfterId")}
            next_url = f"{req.base_url}{req.path}?{urlencode({**query, 'limit': limit, **cursor})}"
        current = start // limit + 1
        meta = {"total": len(rows), "nextPageUrl": next_url, "startAfterId": cursor.get("startAfterId"),
                "startAfter": cursor.get("startAfter"), "currentPage": current,
                "nextPage": current + 1 if more else None, "prevPage": current - 1 if current > 1 else None}
        return chunk, meta

    def _cursor_start(self, req: Request, rows: list[GhlRecord], keys: list[tuple[int, str]],
                      descending: bool) -> int | None:
        after_ms, after_id = req.arg("startAfter"), req.arg("startAfterId")
        if not after_ms and not after_id:
            return None
        if after_id and not after_ms:
            known = next((r for r in rows if r.id == after_id), None)
            if known is None:
                raise BadRequest("startAfterId does not match any record; send startAfter too")
            after_ms = str(epoch_ms(known.created))
        try:
            ms = int(float(after_ms))
        except ValueError as exc:
            raise BadRequest("startAfter must be a number", 422) from exc
        probe = ((-ms) if descending else ms, after_id or "\uffff")
        return bisect.bisect_right(keys, probe)

    def _render(self, rec: GhlRecord, created_key: str, updated_key: str) -> dict[str, Any]:
        return {"id": rec.id, **rec.body, created_key: iso_millis_z(rec.created),
                updated_key: iso_millis_z(rec.updated)}


def _limit(req: Request) -> int:
    limit = int_arg(req, "limit", DEFAULT_LIMIT)
    if limit > MAX_LIMIT:
        raise BadRequest(f"limit must not be greater than {MAX_LIMIT}", 422)
    return limit


def _day(text: str, end: bool) -> datetime:
    """``mm-dd-yyyy`` as a whole UTC day (start of it, or the start of the next one)."""
    try:
        moment = datetime.strptime(text, "%m-%d-%Y")
    except ValueError as exc:
        raise BadRequest("date must be mm-dd-yyyy", 422) from exc
    return as_utc(moment) + (timedelta(days=1) if end else timedelta(0))


def _opportunity_matches(rec: GhlRecord, req: Request) -> bool:
    body = rec.body
    status = req.arg("status") or "all"
    if status not in (*STATUSES, "all"):
        raise BadRequest("status must be one of open, won, lost, abandoned, all", 422)
    checks = [status == "all" or body.get("status") == status]
    for param, key in (("pipeline_id", "pipelineId"), ("pipeline_stage_id", "pipelineStageId"),
                       ("assigned_to", "assignedTo"), ("contact_id", "contactId"), ("id", "id")):
        wanted = req.arg(param)
        value = rec.id if key == "id" else body.get(key)
        checks.append(not wanted or value == wanted)
    q = (req.arg("q") or "").lower()
    checks.append(not q or q in body.get("name", "").lower() or q in (body["contact"].get("email") or ""))
    if req.arg("date"):
        checks.append(rec.created >= _day(req.arg("date"), end=False))
    if req.arg("endDate"):
        checks.append(rec.created < _day(req.arg("endDate"), end=True))
    return all(checks)
