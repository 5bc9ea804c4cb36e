"""In-process fake of the CallRail API v3 (calls, companies, trackers, users).

Modelled behaviour and where it comes from:

* ``GET /v3/a/{account_id}/{resource}.json``; auth header
  ``Authorization: Token token="KEY"`` (quoted or bare), as used by
  airbytehq/airbyte ``source-callrail/manifest.yaml`` and by public clients.
* Offset pagination ``page``/``per_page`` (default 100), answer carries
  ``page``, ``per_page``, ``total_pages``, ``total_records`` and the records
  under the resource name; max ``per_page`` 250:
  https://support.callrail.com/hc/en-us/articles/14788180744973-Relative-pagination
* Relative pagination, calls only: ``relative_pagination=true`` gives
  ``has_next_page`` and ``next_page`` (absolute URL); ``offset`` is the
  0-based page index (same support article).
* Calls default to ``last_30_days`` when no date range is given;
  ``date_range`` values recent/today/yesterday/last_7_days/last_30_days/
  this_month/last_month/all_time; ``start_date``/``end_date`` take a date
  ("2015-09-05", whole day inclusive) or a datetime ("2015-09-05T10:00"):
  mhoskiso/callrail README (ruby gem) and the brief.
* Calls return a default field set; extra fields (company_id, tags,
  created_at, source, ...) only when asked for with ``fields=``. The default
  set is the calls schema of airbyte source-callrail minus the fields it asks
  for in ``fields=``.
* 401/429/5xx status codes and "errors are encoded as JSON":
  https://support.callrail.com/hc/en-us/articles/12132320044173-HTTP-response-codes

What the real API offers for incremental sync, mirrored here: calls have no
``updated_at`` and no "modified since" filter; only ``start_date``/``end_date``
on ``start_time`` (CallRail pushes changes through the "Call Modified"
webhook instead). ``touch()`` therefore changes a call's fields silently, the
same way a CallRail user tagging an old call does; a sync only sees it if it
re-reads that date window.

Not confirmed (choices made here): exact 401 and 429 bodies (Rails-style
``{"error": "HTTP Token: Access denied."}`` used here); whether 429 carries
``Retry-After``; whether ``per_page`` > 250 is clamped (clamped here) or
refused; default sort of non-call resources (creation order here); date-only
boundaries use the account time zone (``tz``, default UTC-05:00). Airbyte's
connector follows a ``Link: <...>; rel="next"`` header, which suggests the real
API sends one; this fake does not, as it could not be confirmed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any, Iterable
from urllib.parse import urlencode

from .server import FakeAPI, Faults, Request, Response, as_utc, route

RESOURCES = ("calls", "companies", "trackers", "users")
MAX_PER_PAGE = 250
DEFAULT_PER_PAGE = 100
DATE_RANGES = ("recent", "today", "yesterday", "last_7_days", "last_30_days",
               "this_month", "last_month", "all_time")
CALL_DEFAULT_FIELDS = (
    "answered", "business_phone_number", "customer_city", "customer_country", "customer_name",
    "customer_phone_number", "customer_state", "direction", "duration", "id", "recording",
    "recording_duration", "recording_player", "start_time", "tracking_phone_number", "voicemail",
)
ID_PREFIX = {"calls": "CAL", "companies": "COM", "trackers": "TRK", "users": "USR"}
SOURCES = ["Google Organic", "Google Ads", "Direct", "Facebook", "Bing Organic", "Yelp"]
NAMES = ["ANA SMITH", "BEN OKAFOR", "WIRELESS CALLER", "CHLOE GARCIA", "D NGUYEN", None]
CITIES = [("Atlanta", "GA"), ("Denver", "CO"), ("Austin", "TX"), ("Portland", "OR")]


class BadRequest(Exception):
    """Invalid query parameter; answered 400 with CallRail's JSON error shape."""


@dataclass
class Window:
    """Half-open [start, end) interval on start_time; None means unbounded."""

    start: datetime | None
    end: datetime | None

    def contains(self, moment: datetime) -> bool:
        return (self.start is None or moment >= self.start) and (self.end is None or moment < self.end)


class FakeCallRail(FakeAPI):
    """Fake CallRail v3 for one account. ``now`` drives the default date range."""

    def __init__(self, api_key: str = "test-key", account_id: str = "ACC0000000000000000000000000000001",
                 *, faults: Faults | None = None, now: datetime | None = None,
                 tz: tzinfo = timezone(timedelta(hours=-5)), data_seed: int = 1) -> None:
        super().__init__(faults)
        self.api_key = api_key
        self.account_id = account_id
        self.now = now
        self.tz = tz
        self.store: dict[str, dict[str, dict[str, Any]]] = {r: {} for r in RESOURCES}
        self._rng = random.Random(data_seed)
        self._counter = 0

    # ----- data helpers ----------------------------------------------------
    def _new_id(self, resource: str) -> str:
        self._counter += 1
        return f"{ID_PREFIX[resource]}{self._counter:032x}"

    def _fmt(self, moment: datetime) -> str:
        """CallRail renders times in the account's zone with millis and offset."""
        return as_utc(moment).astimezone(self.tz).isoformat(timespec="milliseconds")

    def add(self, resource: str, **fields: Any) -> dict[str, Any]:
        """Store one record (fields as the API would render them); returns it."""
        rec = {"id": self._new_id(resource), **fields}
        self.store[resource][rec["id"]] = rec
        return rec

    def records(self, resource: str) -> list[dict[str, Any]]:
        return list(self.store[resource].values())

    def seed(self, resource: str, n: int, start: datetime | None = None,
             end: datetime | None = None) -> list[str]:
        """Create ``n`` records. Calls are spread evenly over [start, end)
        (default: the two years before ``now``); other resources get
        ``created_at`` spread the same way."""
        end = as_utc(end) if end else self.current_time()
        start = as_utc(start) if start else end - timedelta(days=730)
        step = (end - start) / max(n, 1)
        if resource == "calls" and not self.store["companies"]:
            self.seed("companies", 1, start, start + timedelta(days=1))
        make = {"calls": self._call, "companies": self._company,
                "trackers": self._tracker, "users": self._user}[resource]
        return [self.add(resource, **make(i, start + step * i))["id"] for i in range(n)]

    def touch(self, resource: str, ids: Iterable[str], **changes: Any) -> None:
        """Change fields of existing records. Nothing in the API reveals it
        (no updated_at on calls), exactly like the real service."""
        for rid in ids:
            self.store[resource][rid].update(changes)

    def _call(self, i: int, when: datetime) -> dict[str, Any]:
        r = self._rng
        company = r.choice(self.records("companies"))
        answered = r.random() < 0.8
        duration = r.randint(5, 900) if answered else r.randint(0, 30)
        city, state = r.choice(CITIES)
        tracker = r.choice(self.records("trackers")) if self.store["trackers"] else None
        return {
            "answered": answered, "business_phone_number": "+14045550100",
            "customer_city": city, "customer_country": "US", "customer_name": r.choice(NAMES),
            "customer_phone_number": f"+1{r.randint(200, 999)}555{r.randint(1000, 9999)}",
            "customer_state": state, "direction": "inbound", "duration": duration,
            "recording": f"https://api.callrail.com/v3/a/{self.account_id}/calls/{i}/recording.json" if answered else None,
            "recording_duration": str(duration) if answered else None,
            "recording_player": None, "start_time": self._fmt(when),
            "tracking_phone_number": tracker["tracking_numbers"][0] if tracker else "+14045550199",
            "voicemail": not answered and r.random() < 0.5,
            "company_id": company["id"], "company_name": company["name"],
            "tracker_id": tracker["id"] if tracker else None,
            "source": r.choice(SOURCES), "tags": r.sample(["lead", "spam", "booked", "existing"], r.randint(0, 2)),
            "lead_status": r.choice([None, "good_lead", "not_a_lead"]), "note": None, "value": None,
            "created_at": self._fmt(when + timedelta(seconds=duration + 2)),
            "first_call": r.random() < 0.6,
        }

    def _company(self, i: int, when: datetime) -> dict[str, Any]:
        disabled = self._rng.random() < 0.1
        return {"name": f"Company {i}", "status": "disabled" if disabled else "active",
                "time_zone": "America/New_York", "created_at": self._fmt(when),
                "disabled_at": self._fmt(when + timedelta(days=30)) if disabled else None,
                "dni_active": not disabled, "callscore_enabled": False, "lead_scoring_enabled": True}

    def _tracker(self, i: int, when: datetime) -> dict[str, Any]:
        company = self.records("companies")[i % len(self.store["companies"])] if self.store["companies"] else None
        return {"name": f"Tracker {i}", "type": self._rng.choice(["source", "session"]),
                "status": "active", "destination_number": "+14045550100",
                "tracking_numbers": [f"+1404555{2000 + i:04d}"], "sms_enabled": True,
                "company": {"id": company["id"], "name": company["name"]} if company else None,
                "created_at": self._fmt(when), "disabled_at": None}

    def _user(self, i: int, when: datetime) -> dict[str, Any]:
        first, last = self._rng.choice(["Ana", "Ben", "Eve"]), self._rng.choice(["Smith", "Lee"])
        return {"email": f"user{i}@example.com", "first_name": first, "last_name": last,
                "name": f"{first} {last}", "role": self._rng.choice(["admin", "manager", "reporting"]),
                "created_at": self._fmt(when)}

    # ----- HTTP ------------------------------------------------------------
    def routes(self):
        return [route("GET", r"/v3/a/(?P<account>[^/]+)/(?P<resource>[a-z_]+)\.json", self._index)]

    def is_authorized(self, req: Request) -> bool:
        header = req.headers.get("authorization", "")
        return header in (f'Token token="{self.api_key}"', f"Token token={self.api_key}")

    def unauthorized(self, req: Request) -> Response:
        return Response(401, {"error": "HTTP Token: Access denied."},
                        {"WWW-Authenticate": 'Token realm="Application"'})

    def rate_limited(self, req: Request) -> Response:
        return Response(429, {"error": "Too many requests. Please try again later."})

    def server_error(self, req: Request, status: int) -> Response:
        return Response(status, {"error": "Internal server error"})

    def not_found(self, req: Request) -> Response:
        return Response(404, {"error": "Not found"})

    def _index(self, req: Request) -> Response:
        resource = req.params["resource"]
        if req.params["account"] != self.account_id or resource not in RESOURCES:
            return self.not_found(req)
        try:
            per_page = min(int(req.arg("per_page") or DEFAULT_PER_PAGE), MAX_PER_PAGE)
            if per_page < 1:
                raise BadRequest("per_page must be positive")
            rows = self._select(resource, req)
        except (BadRequest, ValueError) as exc:
            return Response(400, {"error": str(exc)})
        if resource == "calls":
            wanted = set(CALL_DEFAULT_FIELDS) | {f for v in req.query.get("fields", []) for f in v.split(",") if f}
            rows = [{k: v for k, v in row.items() if k in wanted} for row in rows]
        if resource == "calls" and (req.arg("relative_pagination") or "").lower() == "true":
            return self._relative_page(req, rows, per_page)
        page = int(req.arg("page") or 1)
        if page < 1:
            return Response(400, {"error": "page must be positive"})
        body = {"page": page, "per_page": per_page,
                "total_pages": (len(rows) + per_page - 1) // per_page,
                "total_records": len(rows),
                resource: rows[(page - 1) * per_page : page * per_page]}
        return Response(200, body, page=page)

    def _relative_page(self, req: Request, rows: list[dict[str, Any]], per_page: int) -> Response:
        index = int(req.arg("offset") or 0)
        chunk = rows[index * per_page : (index + 1) * per_page]
        has_next = (index + 1) * per_page < len(rows)
        next_url = None
        if has_next:
            query = {k: v[0] for k, v in req.query.items()} | {"offset": str(index + 1), "per_page": str(per_page)}
            next_url = f"{req.base_url}{req.path}?{urlencode(query)}"
        body = {"per_page": per_page, "has_next_page": has_next, "next_page": next_url, "calls": chunk}
        return Response(200, body, page=index + 1)

    def _select(self, resource: str, req: Request) -> list[dict[str, Any]]:
        rows = self.records(resource)
        company = req.arg("company_id")
        if company and resource in ("calls", "trackers"):
            rows = [r for r in rows if r.get("company_id", (r.get("company") or {}).get("id")) == company]
        default_sort = "start_time" if resource == "calls" else None
        sort = req.arg("sort") or default_sort
        order = (req.arg("order") or ("desc" if resource == "calls" else "asc")).lower()
        if order not in ("asc", "desc"):
            raise BadRequest(f"Invalid order: {order}")
        if resource == "calls":
            window = self._window(req)
            rows = [r for r in rows if window.contains(_parse_time(r["start_time"]))]
        if sort:
            rows = sorted(rows, key=lambda r: r["id"])
            rows.sort(key=lambda r: _sort_key(r.get(sort)), reverse=order == "desc")
        return rows

    def _window(self, req: Request) -> Window:
        start_arg, end_arg = req.arg("start_date"), req.arg("end_date")
        if start_arg or end_arg:
            start = self._boundary(start_arg, end=False) if start_arg else None
            end = self._boundary(end_arg, end=True) if end_arg else self.current_time() + timedelta(seconds=1)
            return Window(start, end)
        name = req.arg("date_range") or "last_30_days"
        if name not in DATE_RANGES:
            raise BadRequest(f"Invalid date_range: {name}")
        return self._named_range(name)

    def _boundary(self, text: str, end: bool) -> datetime:
        """A date means the whole day in the account zone; a datetime is exact."""
        if "T" not in text:
            day = date.fromisoformat(text) + timedelta(days=1 if end else 0)
            return datetime.combine(day, time(), self.tz)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        moment = moment if moment.tzinfo else moment.replace(tzinfo=self.tz)
        return moment + (timedelta(milliseconds=1) if end else timedelta(0))

    def _named_range(self, name: str) -> Window:
        now = self.current_time().astimezone(self.tz)
        today = datetime.combine(now.date(), time(), self.tz)
        month = today.replace(day=1)
        prev_month = (month - timedelta(days=1)).replace(day=1)
        upper = now + timedelta(seconds=1)
        return {
            "all_time": Window(None, None),
            "recent": Window(now - timedelta(days=30), upper),
            "today": Window(today, upper),
            "yesterday": Window(today - timedelta(days=1), today),
            "last_7_days": Window(today - timedelta(days=7), upper),
            "last_30_days": Window(today - timedelta(days=30), upper),
            "this_month": Window(month, upper),
            "last_month": Window(prev_month, month),
        }[name]


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, str):
        try:
            return (1, datetime.fromisoformat(value).timestamp())
        except ValueError:
            return (2, value.lower())
    return (1, value)
