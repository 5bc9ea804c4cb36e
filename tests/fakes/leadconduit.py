"""In-process fake of the LeadConduit (ActiveProspect) events API.

Pages followed:
  * https://developers.activeprospect.com/api-reference/leads/list-all-events (GET /events on
    https://app.leadconduit.com: auth, parameters, limits, the Event schema)
  * https://developers.activeprospect.com/docs/leadconduit/api/tag/Events/ and
    https://activeprospect.redoc.ly/docs/leadconduit/api/tag/Leads (event properties; "Free
    accounts ... will receive a 401")

Facts modelled from those pages:
  * HTTP Basic auth, user name ``API``, password = the account's API key.
  * ``GET /events`` answers a bare JSON array of events. ``after_id`` / ``before_id``: events
    created after / before the one with that id, both EXCLUSIVE, ids are 24-hex BSON ObjectIds
    (``^[0-9a-fA-F]{24}$``, anything else is a 400); ``start`` / ``end``: created at or after / at
    or before that time (inclusive); ``limit`` 1..1000, default 100; ``sort`` ``asc`` or ``desc``,
    DEFAULT ``desc`` (newest first); ``include`` / ``exclude`` field lists, not both.
  * An event is a self-contained snapshot of the lead at one flow step: ``id``, ``outcome``
    (success/failure/error), ``reason``, ``type`` (source, recipient, filter, ...), ``vars`` (all
    lead data: ``vars.lead.*``, ``vars.flow``, ``vars.source``, ``vars.submission``),
    ``start_timestamp`` / ``end_timestamp`` (epoch milliseconds), ``ms``/``wait_ms``/
    ``overhead_ms``/``lag_ms``/``total_ms``, ``handler_version``, ``version``, ``module_id`` on
    recipient steps, ``expires_at`` (ISO 8601 ``Z``), ``cap_reached``, ``ping_limit_reached``.

Traps reproduced:
  * With the default ``sort=desc``, ``after_id=X&limit=N`` returns the NEWEST N events after X, not
    the next N: walking forward by id needs ``sort=asc``.
  * One lead appears in several events (a source event plus one per recipient, more on later
    feedback), so events are not leads: the same ``vars.lead.id`` repeats.
  * Events expire (``expires_at``): ``expire(before)`` removes old events as retention does.
  * Some leads are partial (no email, empty phone) when seeded with ``partial_every``.

Where the docs are silent (choices made here):
  * ``limit`` above 1000 (or below 1) answers 400 rather than being capped (the schema states
    ``1 <= x <= 1000``). Error bodies ``{"message": ...}``; 401 carries
    ``WWW-Authenticate: Basic realm="LeadConduit"`` and the docs' own phrase "Authorization
    information is missing or invalid."; 429 ``{"message": "Too Many Requests"}`` with
    ``Retry-After``. No rate-limit numbers are published. ``rules`` is accepted and ignored.
  * ``include``/``exclude`` take dotted paths, repeated or comma-separated; ``id`` is always kept.
"""

from __future__ import annotations

import base64
import bisect
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .restkit import BadRequest, ScriptedFake, epoch_ms, int_arg, iso_millis_z, parse_iso
from .server import Faults, Request, Response, as_utc, route

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
OBJECT_ID = re.compile(r"^[0-9a-fA-F]{24}$")
RETENTION = timedelta(days=180)


@dataclass
class Event:
    id: str
    created: datetime
    body: dict[str, Any] = field(default_factory=dict)


class FakeLeadConduit(ScriptedFake):
    """Fake LeadConduit account with one flow; events kept in id order."""

    def __init__(self, api_key: str = "lc-key", *, faults: Faults | None = None, data_seed: int = 1) -> None:
        super().__init__(faults)
        self.api_key = api_key
        self.events: list[Event] = []
        self._ids: list[str] = []
        self._rng = random.Random(data_seed)
        self._machine = f"{self._rng.getrandbits(40):010x}"
        self._counter = 0

    # ----- test-side data API ------------------------------------------------
    def object_id(self, when: datetime) -> str:
        """BSON ObjectId: 4-byte seconds, 5-byte machine, 3-byte counter (sorts by time)."""
        self._counter += 1
        return f"{int(as_utc(when).timestamp()):08x}{self._machine}{self._counter % 0xFFFFFF:06x}"

    def add_lead(self, when: datetime, recipients: int = 1, partial: bool = False, **lead: Any) -> str:
        """A submitted lead: one source event and ``recipients`` recipient events. Returns the lead id."""
        lead_id = self.object_id(when)
        data = self._lead(lead_id, partial) | lead
        self.add_event(when, "source", data, outcome="success")
        for i in range(recipients):
            self.add_event(when + timedelta(milliseconds=300 * (i + 1)), "recipient", data,
                           outcome=self._rng.choice(["success", "success", "failure"]), submitted=when)
        return lead_id

    def add_event(self, when: datetime, kind: str, lead: dict[str, Any], outcome: str = "success",
                  submitted: datetime | None = None) -> Event:
        """Any later event about a lead (feedback, re-post): a new snapshot with a new id.
        ``submitted``: when the lead was submitted (``vars.submission.timestamp``), default ``when``."""
        when = as_utc(when)
        body = self._event(when, kind, dict(lead), outcome, as_utc(submitted or when))
        event = Event(self.object_id(when), when, body)
        pos = bisect.bisect(self._ids, event.id)
        self._ids.insert(pos, event.id)
        self.events.insert(pos, event)
        return event

    def seed(self, leads: int, start: datetime, step: timedelta = timedelta(seconds=37),
             recipients: int = 1, partial_every: int = 0) -> list[str]:
        return [self.add_lead(start + step * i, recipients,
                              partial=bool(partial_every) and i % partial_every == partial_every - 1)
                for i in range(leads)]

    def lead_events(self, lead_id: str) -> list[Event]:
        return [e for e in self.events if e.body["vars"]["lead"]["id"] == lead_id]

    def expire(self, before: datetime) -> int:
        """Drop events created before ``before`` (retention); returns how many went."""
        keep = [e for e in self.events if e.created >= as_utc(before)]
        gone = len(self.events) - len(keep)
        self.events, self._ids = keep, [e.id for e in keep]
        return gone

    def _lead(self, lead_id: str, partial: bool) -> dict[str, Any]:
        r = self._rng
        first, last = r.choice(["Ana", "Ben", "Chloé", "Dev"]), r.choice(["Smith", "García", "O'Neil"])
        return {"id": lead_id, "first_name": first, "last_name": last,
                "email": None if partial else f"{first.lower()}.{last.lower()}{r.randint(1, 999)}@example.com",
                "phone_1": "" if partial else f"512555{r.randint(1000, 9999)}",
                "postal_code": r.choice(["78701", "80222", "33602"]), "state": r.choice(["TX", "CO", "FL"]),
                "trustedform_cert_url": f"https://cert.trustedform.com/{r.getrandbits(64):016x}"}

    def _event(self, when: datetime, kind: str, lead: dict[str, Any], outcome: str,
               submitted: datetime) -> dict[str, Any]:
        ms = self._rng.randint(40, 900)
        body = {"outcome": outcome, "reason": None if outcome == "success" else "duplicate lead",
                "type": kind, "host": "app.leadconduit.com",
                "vars": {"lead": lead, "flow": {"id": "5fd4371e940df5a34a3888b2", "name": "Solar leads"},
                         "source": {"id": "5fd4371e940df5a34a3888b3", "name": "Web form"},
                         "submission": {"timestamp": iso_millis_z(submitted)}},
                "start_timestamp": epoch_ms(when), "end_timestamp": epoch_ms(when) + ms, "ms": ms,
                "wait_ms": ms // 2, "overhead_ms": 12, "lag_ms": 3, "total_ms": ms + 15,
                "handler_version": "2.41.0", "version": "2.0.0", "cap_reached": False,
                "ping_limit_reached": False,
                "expires_at": (when + RETENTION).strftime("%Y-%m-%dT%H:%M:%SZ")}
        if kind == "recipient":
            body["module_id"] = "leadconduit-custom.outbound.json"
        return body

    # ----- HTTP ------------------------------------------------------------
    def routes(self):
        return [route("GET", r"/events", self._list)]

    def is_authorized(self, req: Request) -> bool:
        expected = base64.b64encode(f"API:{self.api_key}".encode()).decode()
        return req.headers.get("authorization", "") == f"Basic {expected}"

    def unauthorized(self, req: Request) -> Response:
        return Response(401, {"message": "Authorization information is missing or invalid."},
                        {"WWW-Authenticate": 'Basic realm="LeadConduit"'})

    def _list(self, req: Request) -> Response:
        try:
            limit, descending, selected = self._parse(req)
            fields = _projection(req)
        except BadRequest as exc:
            return self.message(exc.status, str(exc))
        self.before_page("events", req.index)
        events = self._window(selected)
        chosen = (events[::-1] if descending else events)[:limit]
        return Response(200, [_project({"id": e.id, **e.body}, fields) for e in chosen])

    def _parse(self, req: Request) -> tuple[int, bool, dict[str, Any]]:
        limit = int_arg(req, "limit", DEFAULT_LIMIT)
        if limit > MAX_LIMIT:
            raise BadRequest(f"limit must be less than or equal to {MAX_LIMIT}")
        sort = (req.arg("sort") or "desc").lower()
        if sort not in ("asc", "desc"):
            raise BadRequest("sort must be asc or desc")
        bounds: dict[str, Any] = {}
        for name in ("after_id", "before_id"):
            value = req.arg(name)
            if value is not None:
                if not OBJECT_ID.match(value):
                    raise BadRequest(f"{name} must be a 24 character hex id")
                bounds[name] = value.lower()
        for name in ("start", "end"):
            if req.arg(name):
                bounds[name] = parse_iso(req.arg(name))
        return limit, sort == "desc", bounds

    def _window(self, bounds: dict[str, Any]) -> list[Event]:
        lo = bisect.bisect_right(self._ids, bounds["after_id"]) if "after_id" in bounds else 0
        hi = bisect.bisect_left(self._ids, bounds["before_id"]) if "before_id" in bounds else len(self._ids)
        events = self.events[lo:hi]
        start, end = bounds.get("start"), bounds.get("end")
        return [e for e in events if (start is None or e.created >= start) and (end is None or e.created <= end)]


def _projection(req: Request) -> tuple[str, list[str]] | None:
    include = [f for v in req.query.get("include", []) for f in v.split(",") if f]
    exclude = [f for v in req.query.get("exclude", []) for f in v.split(",") if f]
    if include and exclude:
        raise BadRequest("include cannot be used with exclude")
    if include:
        return "include", include
    return ("exclude", exclude) if exclude else None


def _project(doc: dict[str, Any], fields: tuple[str, list[str]] | None) -> dict[str, Any]:
    if fields is None:
        return doc
    mode, paths = fields
    if mode == "exclude":
        out = _copy(doc)
        for path in paths:
            *parents, leaf = path.split(".")
            node = out
            for p in parents:
                node = node.get(p) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(leaf, None)
        return out
    out: dict[str, Any] = {"id": doc["id"]}
    for path in paths:
        value, found = _get(doc, path.split("."))
        if found:
            _put(out, path.split("."), value)
    return out


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def _get(doc: Any, parts: list[str]) -> tuple[Any, bool]:
    for p in parts:
        if not isinstance(doc, dict) or p not in doc:
            return None, False
        doc = doc[p]
    return doc, True


def _put(doc: dict[str, Any], parts: list[str], value: Any) -> None:
    for p in parts[:-1]:
        doc = doc.setdefault(p, {})
    doc[parts[-1]] = value

