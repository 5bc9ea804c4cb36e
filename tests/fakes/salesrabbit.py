"""In-process fake of the SalesRabbit API (door-to-door sales): users, leads, lead status histories.

Pages and public material followed (the developer portal itself, developers.salesrabbit.com,
is not in the stored corpora; the facts below are those every public client agrees on):
  * Base URL https://api.salesrabbit.com, ``Authorization: Bearer <API token>`` created under
    Integrations > API in the dashboard: https://docs.tray.ai/connectors/service/salesrabbit
  * ``GET /leads`` and ``GET /leadStatusHistories`` with ``page``/``perPage``, the
    ``If-Modified-Since`` REQUEST HEADER carrying an ISO 8601 instant (``2021-07-04T00:00:00+00:00``)
    and the answer ``{"data": ..., "meta": {"morePages": bool}}``: public connector
    eaglytics-hm/prq_exteriors_salesrabbit (models.py, samples/Leads.json,
    samples/LeadStatusHistories.json); ``sortBy=dateCreated&order=asc`` and ``perPage=1000``/``2000``
    seen in other public clients; ``leadStatusActivities`` uses ``If-Status-Modified-Since`` and
    caps ``perPage`` at 500 (lecca-io / lunnoa-automate SalesRabbit actions).
  * Lead fields and timestamp format (``2021-07-04T01:03:20+00:00``: seconds, explicit +00:00),
    ``customFields`` arriving as a doubly JSON-encoded STRING (``"\\"{}\\""``) and ``integrationData``
    as a JSON string: samples/Leads.json above.
  * Lead status histories: ``data`` is an OBJECT keyed by lead id, each value a list of
    ``{id, name, abbreviation, active, changedByUserId, statusUpdated, leadCreated, leadModified}``:
    samples/LeadStatusHistories.json above.
  * ``If-Status-Modified-Since`` (leads by ``statusModified``) on ``/leads`` and
    ``/leadStatusHistories``, ``perPage=2000`` on both, ``If-Modified-Since`` sent as an RFC 7231
    HTTP-date (JavaScript ``toUTCString()``) as well as ISO 8601, ``GET /leadStatuses``: public
    dashboard code reading the API (a Vercel app's api/doors.js and api/range.js, found by
    find_string 'If-Status-Modified-Since'; their repository is not named by the index). The same
    code says "SalesRabbit caps /leads at 2000 rows" and pages by moving the header to the newest
    ``statusModified`` read with the comment "include boundary; dedup handles repeats": the header
    is inclusive (records AT the instant are returned again).

Where the docs are silent (choices made here):
  * ``If-Modified-Since`` selects ``dateModified`` >= the value (inclusive, per the client comment
    above; whole seconds). An unparsable value answers 400. On users it is ignored (every user is
    returned). ``If-Status-Modified-Since`` selects ``statusModified`` >= the value.
  * ``perPage`` default 100, maximum 2000 (the 2000 cap quoted above); a larger value answers 400
    ``{"message": "perPage must be between 1 and 2000"}``.
  * An empty page of ``/leadStatusHistories`` has ``"data": []`` (a PHP empty array), not ``{}``.
  * Default order ``id`` descending (newest first); ``sortBy`` dateCreated|dateModified|id and
    ``order`` asc|desc. No total count: ``meta.morePages`` is the only stop signal, so page count is
    not known up front. Offset pages are cut from live data: a lead created or modified during a
    walk shifts later pages (a record is repeated or skipped).
  * Deleted leads simply disappear (no tombstone, no deleted filter).
  * ``users_ignore_paging=True``: ``/users`` answers every user on every page, with ``morePages``
    as if it paged (the reference notes' own SalesRabbit client logged "SalesRabbit Users API
    appears to return all users on every page regardless of pagination"; how ``morePages`` behaves
    then is not known, this is the worst case: it never says false).
  * Errors: 401 ``{"message": "Unauthorized"}``; 429 ``{"message": "Too Many Requests"}`` with
    ``Retry-After``; no published rate-limit numbers or headers.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from .restkit import BadRequest, ScriptedFake, int_arg, iso_seconds_offset, parse_http_or_iso
from .server import Faults, Request, Response, as_utc, route

MAX_PER_PAGE = 2000
DEFAULT_PER_PAGE = 100
LEAD_STATUSES = [(204, "Not Home", "NH"), (212, "Objection - Follow Up", "FU"), (214, "Dead", "DE"),
                 (203, "Soft Appointment Set", "SA"), (215, "Inspection Done", "ID")]
STREETS = ["S Dexter St", "S Clermont St", "S Birch St", "S Bellaire St"]


class FakeSalesRabbit(ScriptedFake):
    """Fake SalesRabbit organisation. Leads and users are dicts with aware datetimes under
    ``_created``/``_modified``; history entries keep ``_updated``."""

    messages = {**ScriptedFake.messages, 500: "Server Error"}

    def __init__(self, token: str = "sr-token", *, faults: Faults | None = None, data_seed: int = 1,
                 users_ignore_paging: bool = False) -> None:
        super().__init__(faults)
        self.token = token
        self.users_ignore_paging = users_ignore_paging
        self.users: dict[int, dict[str, Any]] = {}
        self.leads: dict[int, dict[str, Any]] = {}
        self.history: dict[int, list[dict[str, Any]]] = {}
        self._rng = random.Random(data_seed)
        self._next_user, self._next_lead = 911705140, 13000

    # ----- test-side data API ------------------------------------------------
    def add_user(self, created: datetime, **fields: Any) -> dict[str, Any]:
        self._next_user += 1
        first, last = self._rng.choice(["Michael", "Ana", "Ben"]), self._rng.choice(["Overfield", "Lee"])
        user = {"id": self._next_user, "firstName": first, "lastName": last,
                "email": f"rep{self._next_user}@example.com", "phone": "7205550100", "role": "Rep",
                "active": True, "orgUnitId": 1, "_created": as_utc(created), "_modified": as_utc(created)}
        user.update(fields)
        self.users[user["id"]] = user
        return user

    def add_lead(self, created: datetime, user_id: int | None = None, **fields: Any) -> dict[str, Any]:
        self._next_lead += 1
        r = self._rng
        user = self.users.get(user_id) if user_id else (r.choice(list(self.users.values())) if self.users else None)
        status_id, status, _ = r.choice(LEAD_STATUSES)
        lead = {"id": self._next_lead, "userName": f"{user['firstName']} {user['lastName']}" if user else None,
                "userId": user["id"] if user else None, "firstName": "", "lastName": "",
                "phonePrimary": "", "phoneAlternate": "", "email": "",
                "street1": f"{r.randint(100, 9999)} {r.choice(STREETS)}", "street2": "", "city": "Denver",
                "state": "CO", "zip": "80222", "country": "USA",
                "latitude": round(39.6 + r.random() / 10, 12), "longitude": round(-104.9 - r.random() / 10, 11),
                "status": status, "notes": None, "customFields": json.dumps("{}"), "businessName": "",
                "appointment": None, "integrationData": "{}", "_created": as_utc(created),
                "_modified": as_utc(created), "_status_modified": as_utc(created)}
        lead.update(fields)
        self.leads[lead["id"]] = lead
        self._record_status(lead, status_id, status, as_utc(created))
        return lead

    def seed(self, users: int, leads: int, start: datetime, step: timedelta = timedelta(minutes=3)) -> None:
        for i in range(users):
            self.add_user(start - timedelta(days=30 - i))
        for i in range(leads):
            self.add_lead(start + step * i)

    def touch(self, ids: Iterable[int], when: datetime, status: str | None = None, **changes: Any) -> None:
        """Modify leads at ``when`` (a new ``status`` also appends a status-history entry)."""
        for lid in ids:
            lead = self.leads[lid]
            lead.update(changes)
            lead["_modified"] = as_utc(when)
            if status:
                status_id = next((s[0] for s in LEAD_STATUSES if s[1] == status), 299)
                lead["status"], lead["_status_modified"] = status, as_utc(when)
                self._record_status(lead, status_id, status, as_utc(when))

    def delete(self, ids: Iterable[int]) -> None:
        for lid in ids:
            self.leads.pop(lid, None)
            self.history.pop(lid, None)

    def _record_status(self, lead: dict[str, Any], status_id: int, name: str, when: datetime) -> None:
        abbreviation = next((s[2] for s in LEAD_STATUSES if s[0] == status_id), name[:2].upper())
        self.history.setdefault(lead["id"], []).append(
            {"id": status_id, "name": name, "abbreviation": abbreviation, "active": True,
             "changedByUserId": str(lead["userId"]), "_updated": when})

    # ----- HTTP ------------------------------------------------------------
    def routes(self):
        return [route("GET", r"/users", self._users), route("GET", r"/leads", self._leads),
                route("GET", r"/leadStatusHistories", self._histories)]

    def is_authorized(self, req: Request) -> bool:
        return req.headers.get("authorization", "") == f"Bearer {self.token}"

    def _paged(self, req: Request, entity: str, rows: Callable[[], list[dict[str, Any]]],
               render: Callable[[list[dict[str, Any]]], Any]) -> Response:
        try:
            page, per_page = int_arg(req, "page", 1), int_arg(req, "perPage", DEFAULT_PER_PAGE)
            if per_page > MAX_PER_PAGE:
                raise BadRequest(f"perPage must be between 1 and {MAX_PER_PAGE}")
            self.before_page(entity, page)
            selected = rows()
        except BadRequest as exc:
            return self.message(exc.status, str(exc))
        chunk = selected[(page - 1) * per_page: page * per_page]
        more = page * per_page < len(selected)
        return Response(200, {"data": render(chunk), "meta": {"morePages": more}}, page=page)

    def _since(self, req: Request, header: str) -> datetime | None:
        raw = req.headers.get(header)
        return parse_http_or_iso(raw) if raw else None

    def _sorted_leads(self, req: Request) -> list[dict[str, Any]]:
        keys = {"id": "id", "dateCreated": "_created", "dateModified": "_modified"}
        sort_by, order = req.arg("sortBy") or "id", (req.arg("order") or "desc").lower()
        if sort_by not in keys or order not in ("asc", "desc"):
            raise BadRequest("sortBy must be id, dateCreated or dateModified; order asc or desc")
        rows = sorted(self.leads.values(), key=lambda r: r["id"])
        rows.sort(key=lambda r: r[keys[sort_by]], reverse=order == "desc")
        since, status_since = self._since(req, "if-modified-since"), self._since(req, "if-status-modified-since")
        return [r for r in rows if (since is None or r["_modified"] >= since)
                and (status_since is None or r["_status_modified"] >= status_since)]

    def _users(self, req: Request) -> Response:
        def render(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
            users = sorted(self.users.values(), key=lambda u: u["id"]) if self.users_ignore_paging else chunk
            return [_render(u, {"_created": "dateCreated", "_modified": "dateModified"}) for u in users]

        resp = self._paged(req, "users", lambda: sorted(self.users.values(), key=lambda u: u["id"]), render)
        if self.users_ignore_paging and resp.status == 200:
            resp.body["meta"]["morePages"] = True
        return resp

    def _leads(self, req: Request) -> Response:
        names = {"_created": "dateCreated", "_modified": "dateModified", "_status_modified": "statusModified"}
        return self._paged(req, "leads", lambda: self._sorted_leads(req),
                           lambda chunk: [_render(r, names) for r in chunk])

    def _histories(self, req: Request) -> Response:
        """One entry per lead (keyed by lead id) holding its whole history."""
        def rows() -> list[dict[str, Any]]:
            return [lead for lead in self._sorted_leads(req) if lead["id"] in self.history]

        def render(chunk: list[dict[str, Any]]) -> dict[str, Any]:
            return {str(lead["id"]): [self._history_entry(h, lead) for h in self.history[lead["id"]]]
                    for lead in chunk} or []

        return self._paged(req, "leadStatusHistories", rows, render)

    def _history_entry(self, entry: dict[str, Any], lead: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in entry.items() if not k.startswith("_")}
        out["statusUpdated"] = iso_seconds_offset(entry["_updated"])
        out["leadCreated"] = iso_seconds_offset(lead["_created"])
        out["leadModified"] = iso_seconds_offset(lead["_modified"])
        return out


def _render(rec: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    out = {k: v for k, v in rec.items() if not k.startswith("_")}
    for private, public in names.items():
        out[public] = iso_seconds_offset(rec[private])
    return out
