"""In-process fake of the HubSpot CRM v3 objects API (contacts, companies, deals).

Modelled behaviour and where it comes from:

* ``POST /crm/v3/objects/{type}/search`` with ``filterGroups`` (OR of groups,
  AND inside a group), ``sorts`` (one), ``properties``, ``limit`` (default
  10), ``after``; answer ``{"total", "results", "paging": {"next": {"after"}}}``;
  default properties per object (``hs_object_id`` among them); every property
  value is a string (or null), datetimes as ISO 8601 UTC with milliseconds.
  https://developers.hubspot.com/docs/api/crm/search,
  https://developers.hubspot.com/docs/api-reference/2026-03/crm/search-the-crm
  (request/response, default properties), the api-evangelist/hubspot
  SearchRequest schema (operators EQ NEQ LT LTE GT GTE BETWEEN IN NOT_IN
  HAS_PROPERTY NOT_HAS_PROPERTY; "limit ... Maximum value is 200").
* ``limit`` at most 200 per page, above it HTTP 400: HubSpot search guide
  "Limitations" ("The maximum number of supported objects per page is 200",
  quoted in activepieces/activepieces PR #10160), raised from 100 in
  https://developers.hubspot.com/changelog/increasing-our-api-limits (Sept 2024).
* Filter groups limited to 5 groups / 10 filters per group / 25 filters:
  https://developers.hubspot.com/changelog/breaking-change-expanded-filtering-capabilities-and-error-messaging-in-hubspots-search-api
* 10,000 results per query ("The search endpoints are limited to 10,000 total
  results for any given query. Attempting to page beyond 10,000 will result in
  a 400 error", search guide "Limitations"; airbytehq/airbyte PR #10700; AWS
  Glue HubSpot connector limitations). ``total`` still counts every match and
  ``paging.next.after`` still points past the cap, so a naive client pages
  into the 400. ``after`` >= 10000 fails even with ``limit: 10``
  (HubSpot/hubspot-api-nodejs issue #132). A page reaching past 10,000
  (``after + limit > 10000``) is refused too, like an Elasticsearch
  ``from + size`` window: the stricter reading, so a client that passes here
  passes there.
* Search rate limit: 4 requests/second per token (changelog
  https://developers.hubspot.com/changelog/crm-search-api-rate-limit-increase;
  current docs say 5/s per account, activepieces PR #10160). Default here 4/s,
  configurable (``search_rate_limit``, None disables). 429 body from
  HGData/mk-node-hubspot PR #84 / issue #89 (``errorType: RATE_LIMIT``,
  ``policyName: SECONDLY``, "You have reached your secondly limit.").
* 401 body (``category: INVALID_AUTHENTICATION``, ``correlationId``):
  HubSpot/hubspot-api-nodejs issues #148 and #432.
* Filter values for dates are epoch milliseconds ("HubSpot API endpoints
  accept UNIX formatted timestamps in milliseconds",
  developers.hubspot.com/docs/faq/how-should-timestamps-be-formatted-for-hubspots-apis);
  ISO 8601 strings are accepted too. ``hs_object_id`` compares and sorts as a
  number.
* ``GET /crm/v3/objects/{type}?limit&after&properties&archived`` list endpoint
  with an opaque cursor (base64, like the ``NTI1Cg%3D%3D`` example in the
  api-evangelist/hubspot paging schema); ``archived=true`` lists only archived.

Not confirmed (choices made here): the exact 400 messages (cap, ``limit``
above 200); whether ``after + limit > 10000`` with ``after < 10000`` is refused
or cut short (refused here, see above); whether a 429 carries ``Retry-After``
(added here); the order of records that tie on the sort property (id
ascending here, stable across pages).
"""

from __future__ import annotations

import base64
import itertools
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from .server import FakeAPI, Faults, Request, Response, as_utc, correlation_id, route

OBJECT_TYPES = ("contacts", "companies", "deals")
SEARCH_RESULT_CAP = 10_000
SEARCH_MAX_LIMIT = 200
LIST_MAX_LIMIT = 100

LASTMOD = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate",
           "deals": "hs_lastmodifieddate"}
DEFAULT_PROPERTIES = {
    "contacts": ["createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"],
    "companies": ["createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"],
    "deals": ["amount", "closedate", "createdate", "dealname", "dealstage",
              "hs_lastmodifieddate", "hs_object_id", "pipeline"],
}
DATETIME_PROPS = {"createdate", "lastmodifieddate", "hs_lastmodifieddate", "closedate"}
NUMERIC_PROPS = {"hs_object_id", "amount", "numberofemployees", "annualrevenue"}

FIRST = ["Ana", "Ben", "Chloé", "Dmitri", "Eve", "Farah", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lía"]
LAST = ["Smith", "O'Neil", "García", "Nguyen", "Kowalski", "Okafor", "Müller", "Tanaka", "Rossi"]
STAGES = ["subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer"]
INDUSTRIES = ["COMPUTER_SOFTWARE", "RETAIL", "HOSPITAL_HEALTH_CARE", "CONSTRUCTION", "FINANCIAL_SERVICES"]
DEALSTAGES = ["appointmentscheduled", "qualifiedtobuy", "presentationscheduled", "closedwon", "closedlost"]


def hs_time(value: datetime) -> str:
    """HubSpot renders datetimes as ISO 8601 UTC with milliseconds and ``Z``."""
    value = as_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_hs_time(value: Any) -> int:
    """Epoch millis from a filter value: millis (int/str) or an ISO 8601 string."""
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(as_utc(parsed).timestamp() * 1000)


class BadRequest(Exception):
    """Raised by request parsing; becomes a HubSpot VALIDATION_ERROR 400."""


@dataclass
class HubRecord:
    """One CRM object; ``properties`` values are strings or None, like the API."""

    id: str
    properties: dict[str, str | None]
    created_at: datetime
    updated_at: datetime
    archived: bool = False
    archived_at: datetime | None = None

    def to_json(self, props: Iterable[str]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "properties": {p: self.properties.get(p) for p in props},
            "createdAt": hs_time(self.created_at),
            "updatedAt": hs_time(self.updated_at),
            "archived": self.archived,
        }
        if self.archived_at is not None:
            body["archivedAt"] = hs_time(self.archived_at)
        return body


@dataclass
class _Store:
    records: dict[str, HubRecord] = field(default_factory=dict)
    ids: Iterable[int] = field(default_factory=lambda: itertools.count(1001))


class FakeHubSpot(FakeAPI):
    """Fake HubSpot CRM v3. Start with ``with FakeHubSpot(token="t") as hs:``.

    ``search_rate_limit`` is requests/second for the search endpoints (None
    disables); change it at runtime via ``hs.search_rate_limit = ...``.
    ``search_hook`` (object_type, n) runs before the n-th search request (1, 2,
    ...) is answered: a test uses it to modify records between two pages of one
    run, as users and workflows do while a sync pages through the results.
    """

    def __init__(self, token: str = "test-token", *, faults: Faults | None = None,
                 search_rate_limit: float | None = 4, search_max_limit: int = SEARCH_MAX_LIMIT,
                 data_seed: int = 1) -> None:
        super().__init__(faults)
        self.token = token
        self.search_max_limit = search_max_limit
        self.search_rate_limit = search_rate_limit
        self._stores = {t: _Store() for t in OBJECT_TYPES}
        self._data_rng = random.Random(data_seed)
        self._version = 0  # bumped by every mutation; keys the search cache
        self._search_cache: dict[str, tuple[int, list[HubRecord]]] = {}
        self.search_hook: Callable[[str, int], None] | None = None
        self.searches = 0

    # search_rate_limit is stored in the shared per-group limiter table
    @property
    def search_rate_limit(self) -> float | None:
        return self.group_limits.get("search")

    @search_rate_limit.setter
    def search_rate_limit(self, value: float | None) -> None:
        self.group_limits["search"] = value

    # ----- data helpers ----------------------------------------------------
    def records(self, object_type: str, archived: bool | None = False) -> list[HubRecord]:
        """Records of a type in id order; ``archived=None`` returns all."""
        recs = self._stores[object_type].records.values()
        return [r for r in recs if archived is None or r.archived == archived]

    def get(self, object_type: str, record_id: str) -> HubRecord:
        return self._stores[object_type].records[str(record_id)]

    def add(self, object_type: str, created: datetime, modified: datetime | None = None,
            **props: str | None) -> HubRecord:
        """Create one record with explicit properties (others left unset)."""
        store = self._stores[object_type]
        rid = str(next(store.ids))  # type: ignore[call-overload]
        modified = modified or created
        properties: dict[str, str | None] = {k: (None if v is None else str(v)) for k, v in props.items()}
        properties.update({"hs_object_id": rid, "createdate": hs_time(created),
                           LASTMOD[object_type]: hs_time(modified)})
        rec = HubRecord(rid, properties, as_utc(created), as_utc(modified))
        store.records[rid] = rec
        self._version += 1
        return rec

    def seed(self, object_type: str, n: int, start: datetime,
             step: timedelta = timedelta(minutes=1),
             modified_offset: timedelta = timedelta(0)) -> list[str]:
        """Create ``n`` realistic records, createdate = start + i*step.

        lastmodified = createdate + modified_offset. About 3% of contacts get
        an invalid email and about 10% a null phone, as real portals do.
        """
        make = {"contacts": self._contact, "companies": self._company, "deals": self._deal}[object_type]
        ids = []
        for i in range(n):
            created = as_utc(start) + step * i
            ids.append(self.add(object_type, created, created + modified_offset, **make(i)).id)
        return ids

    def touch(self, object_type: str, ids: Iterable[str], when: datetime | None = None,
              **changes: str | None) -> None:
        """Modify records: apply property changes and bump last-modified to ``when``."""
        when = as_utc(when) if when else self.current_time()
        for rid in ids:
            rec = self.get(object_type, rid)
            rec.properties.update({k: (None if v is None else str(v)) for k, v in changes.items()})
            rec.properties[LASTMOD[object_type]] = hs_time(when)
            rec.updated_at = when
        self._version += 1

    def archive(self, object_type: str, ids: Iterable[str], when: datetime | None = None) -> None:
        """Archive (soft-delete) records: gone from search, listed with archived=true."""
        when = as_utc(when) if when else self.current_time()
        for rid in ids:
            rec = self.get(object_type, rid)
            rec.archived, rec.archived_at, rec.updated_at = True, when, when
        self._version += 1

    def _contact(self, i: int) -> dict[str, str | None]:
        r = self._data_rng
        first, last = r.choice(FIRST), r.choice(LAST)
        email = f"{first}.{last}.{i}@example.com".lower().replace("'", "")
        if r.random() < 0.03:
            email = r.choice(["not-an-email", f"{first}@", f"{first} {last}@example..com", ""])
        phone = None if r.random() < 0.1 else f"+1-555-{r.randint(100, 999)}-{r.randint(1000, 9999)}"
        return {"email": email, "firstname": first, "lastname": last, "phone": phone,
                "lifecyclestage": r.choice(STAGES)}

    def _company(self, i: int) -> dict[str, str | None]:
        r = self._data_rng
        word = r.choice(["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay"])
        return {"name": f"{word} {i}", "domain": f"{word.lower()}{i}.example.com",
                "industry": r.choice(INDUSTRIES), "numberofemployees": str(r.randint(1, 5000)),
                "annualrevenue": str(r.randint(10, 90000) * 1000)}

    def _deal(self, i: int) -> dict[str, str | None]:
        r = self._data_rng
        close = datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(days=r.randint(0, 700))
        return {"dealname": f"Deal {i}", "amount": f"{r.randint(100, 500000)}.{r.randint(0, 99):02d}",
                "dealstage": r.choice(DEALSTAGES), "pipeline": "default", "closedate": hs_time(close)}

    # ----- HTTP ------------------------------------------------------------
    def routes(self):
        types = "|".join(OBJECT_TYPES)
        return [
            route("POST", rf"/crm/v3/objects/(?P<type>{types})/search", self._search, "search"),
            route("GET", rf"/crm/v3/objects/(?P<type>{types})", self._list),
        ]

    def is_authorized(self, req: Request) -> bool:
        return req.headers.get("authorization") == f"Bearer {self.token}"

    def _error(self, status: int, message: str, category: str, **extra: Any) -> Response:
        cid = correlation_id()
        body = {"status": "error", "message": message, "correlationId": cid, "category": category, **extra}
        return Response(status, body, {"X-HubSpot-Correlation-Id": cid})

    def unauthorized(self, req: Request) -> Response:
        return self._error(
            401,
            "Authentication credentials not found. This API supports OAuth 2.0 authentication and "
            "you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            "INVALID_AUTHENTICATION",
        )

    def rate_limited(self, req: Request) -> Response:
        cid = correlation_id()
        body = {"status": "error", "message": "You have reached your secondly limit.",
                "errorType": "RATE_LIMIT", "correlationId": cid, "policyName": "SECONDLY"}
        return Response(429, body, {"X-HubSpot-Correlation-Id": cid})

    def server_error(self, req: Request, status: int) -> Response:
        return self._error(status, "internal error", "INTERNAL_ERROR")

    def not_found(self, req: Request) -> Response:
        return self._error(404, "Resource not found", "OBJECT_NOT_FOUND")

    def _bad(self, message: str) -> Response:
        return self._error(400, message, "VALIDATION_ERROR")

    def _search(self, req: Request) -> Response:
        otype = req.params["type"]
        self.searches += 1
        if self.search_hook is not None:
            self.search_hook(otype, self.searches)
        try:
            body = req.json()
            limit = int(body.get("limit", 10))
            offset = int(body.get("after") or 0)
            predicate = _compile_filters(body.get("filterGroups") or [])
            sort_prop, descending = _parse_sort(body.get("sorts") or [])
        except BadRequest as exc:
            return self._bad(str(exc))
        except (ValueError, TypeError, AttributeError):
            return self._bad("Invalid input JSON on line 1")
        if not 0 < limit <= self.search_max_limit:
            return self._bad(f"limit must be between 1 and {self.search_max_limit} (got {limit})")
        if offset < 0 or offset + limit > SEARCH_RESULT_CAP:
            return self._bad(
                f"Cannot page past {SEARCH_RESULT_CAP} results (after={offset}, limit={limit})")
        matches = self._matches(otype, body, predicate, sort_prop, descending)
        page = matches[offset : offset + limit]
        props = body.get("properties") or DEFAULT_PROPERTIES[otype]
        resp: dict[str, Any] = {"total": len(matches), "results": [r.to_json(props) for r in page]}
        if offset + limit < len(matches):
            resp["paging"] = {"next": {"after": str(offset + limit)}}
        return Response(200, resp, page=offset // limit + 1)

    def _matches(self, otype: str, body: dict[str, Any], predicate: Any,
                 sort_prop: str | None, descending: bool) -> list[HubRecord]:
        """Filtered + sorted records, cached per query while the store is unchanged
        (paging through 25k records would otherwise re-sort on every page)."""
        key = json.dumps([otype, body.get("filterGroups"), body.get("sorts")], sort_keys=True)
        cached = self._search_cache.get(key)
        if cached and cached[0] == self._version:
            return cached[1]
        matches = [r for r in self.records(otype) if predicate(r)]  # already in id order
        if sort_prop:
            matches.sort(key=lambda r: _sort_key(r, sort_prop), reverse=descending)
        if len(self._search_cache) > 32:
            self._search_cache.clear()
        self._search_cache[key] = (self._version, matches)
        return matches

    def _list(self, req: Request) -> Response:
        otype = req.params["type"]
        try:
            limit = int(req.arg("limit") or 10)
            last_id = int(base64.urlsafe_b64decode(req.arg("after")).decode()) if req.arg("after") else 0
        except ValueError:
            return self._bad("Invalid after or limit")
        if not 0 < limit <= LIST_MAX_LIMIT:
            return self._bad(f"limit must be between 1 and {LIST_MAX_LIMIT} (got {limit})")
        archived = (req.arg("archived") or "false").lower() == "true"
        props = [p for v in req.query.get("properties", []) for p in v.split(",") if p]
        props = props or DEFAULT_PROPERTIES[otype]
        recs = [r for r in self.records(otype, archived) if int(r.id) > last_id]
        page = recs[:limit]
        resp: dict[str, Any] = {"results": [r.to_json(props) for r in page]}
        if len(recs) > limit:
            cursor = base64.urlsafe_b64encode(page[-1].id.encode()).decode()
            link = f"{req.base_url}/crm/v3/objects/{otype}?limit={limit}&after={cursor}"
            if archived:
                link += "&archived=true"
            resp["paging"] = {"next": {"after": cursor, "link": link}}
        return Response(200, resp)


# --------------------------------------------------------------------------- #
# Filter and sort compilation (pure functions, kept out of the class)
# --------------------------------------------------------------------------- #
def _typed(prop: str, value: Any) -> Any:
    """Comparable form of a value. Datetimes become the canonical HubSpot
    string (it sorts like the instant and avoids parsing 25k records/request)."""
    if prop in DATETIME_PROPS:
        text = str(value)
        if len(text) == 24 and text.endswith("Z") and text[10] == "T":
            return text
        return hs_time(datetime.fromtimestamp(parse_hs_time(value) / 1000, timezone.utc))
    if prop in NUMERIC_PROPS:
        return float(value)
    return str(value).lower()


def _sort_key(rec: HubRecord, prop: str) -> tuple[int, Any]:
    raw = rec.properties.get(prop)
    if raw is None or raw == "":
        return (0, 0)
    try:
        return (1, _typed(prop, raw))
    except ValueError:
        return (1, raw)


def _parse_sort(sorts: list[Any]) -> tuple[str | None, bool]:
    if not sorts:
        return None, False
    if len(sorts) > 1:
        raise BadRequest("Only one sort is supported")
    s = sorts[0]
    if isinstance(s, str):
        return s.lstrip("-"), s.startswith("-")
    direction = str(s.get("direction", "ASCENDING")).upper()
    if direction not in ("ASCENDING", "DESCENDING"):
        raise BadRequest(f"Invalid sort direction {direction}")
    return s["propertyName"], direction == "DESCENDING"


OPERATORS = {"EQ", "NEQ", "GT", "GTE", "LT", "LTE", "BETWEEN", "IN", "NOT_IN",
             "HAS_PROPERTY", "NOT_HAS_PROPERTY"}


def _compile_filters(groups: list[dict[str, Any]]):
    """Validate filterGroups and return a predicate over HubRecord.

    Operands are converted once here, so a search over 25k records stays fast.
    """
    if not isinstance(groups, list) or len(groups) > 5:
        raise BadRequest("Too many filter groups: max 5")
    compiled = [[_compile_filter(f) for f in g.get("filters", [])] for g in groups]
    if any(len(g) > 10 for g in compiled) or sum(map(len, compiled)) > 25:
        raise BadRequest("Too many filters: max 10 per filterGroup and 25 in total")
    if not compiled:
        return lambda rec: True
    return lambda rec: any(all(test(rec) for test in g) for g in compiled)


def _compile_filter(f: dict[str, Any]):
    prop, op = f.get("propertyName"), f.get("operator")
    if op not in OPERATORS or not prop:
        raise BadRequest(f"Invalid filter {f!r}")
    try:
        want = _typed(prop, f["value"]) if f.get("value") is not None else None
        high = _typed(prop, f["highValue"]) if f.get("highValue") is not None else None
        values = {_typed(prop, v) for v in f.get("values") or []}
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"Invalid filter value in {f!r}") from exc
    if want is None and op in ("EQ", "NEQ", "GT", "GTE", "LT", "LTE", "BETWEEN"):
        raise BadRequest(f"Filter {f!r} needs a value")
    if high is None and op == "BETWEEN":
        raise BadRequest(f"BETWEEN filter {f!r} needs a highValue")
    compare = {"EQ": lambda h: h == want, "NEQ": lambda h: h != want,
               "GT": lambda h: h > want, "GTE": lambda h: h >= want,
               "LT": lambda h: h < want, "LTE": lambda h: h <= want,
               "BETWEEN": lambda h: want <= h <= high,
               "IN": lambda h: h in values, "NOT_IN": lambda h: h not in values}

    def test(rec: HubRecord) -> bool:
        raw = rec.properties.get(prop)
        if op == "HAS_PROPERTY":
            return raw not in (None, "")
        if op == "NOT_HAS_PROPERTY":
            return raw in (None, "")
        if raw in (None, ""):
            return op in ("NEQ", "NOT_IN")
        try:
            return compare[op](_typed(prop, raw))
        except ValueError:
            return False

    return test
