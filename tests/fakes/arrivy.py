"""In-process fake of the Arrivy REST API (field service): tasks, task statuses, bookings,
entities (crew), groups, customers.

Pages followed:
  * Arrivy API documentation, "Tasks" chapter (https://www.arrivy.com/api/tasks,
    .../tasks/{id}/status; a public markdown copy of the vendor's API docs) and "Entities" chapter
    (https://www.arrivy.com/api/entities); the app host https://app.arrivy.com/api serves the same
    paths (used by every public client found).
  * Header auth ``X-Auth-Key`` + ``X-Auth-Token``: same docs (every curl example).

Facts modelled from those pages:
  * ``GET /api/tasks``: a bare JSON array. Params ``from``/``to`` (ISO 8601 with offset,
    ``YYYY-MM-DDTHH:mm:ssZZ``; the ``+`` must be URL-encoded, an unencoded one arrives as a space and
    is refused here), ``page`` (default 1), ``items_per_page`` (default 500), ``unscheduled``
    (default false: unscheduled tasks are returned ONLY with ``unscheduled=true``),
    ``entity_id``, ``customer_id``, ``external_id``.
  * ``GET /api/tasks/{id}/status``: the task's status history, ``page`` + ``items_per_page``
    (default 100); status types NOTSTARTED, ENROUTE, STARTED, COMPLETE, EXCEPTION, CANCELLED, ...
  * Datetimes are returned "converted to UTC in ISO 8601" without an offset
    (``2017-10-14T06:23:33``), with the original value kept in ``*_original_iso_str``.
  * ``GET /api/entities``: every entity at once (no paging documented), filters ``external_id``
    and ``email``; ``name``, ``id`` and ``type`` are always present.
  * Ids are 16-digit integers (``5348024557502464``).

Where the docs are silent (choices made here):
  * ``/api/bookings``, ``/api/groups`` and ``/api/customers`` are not in the pages found: bookings
    page like tasks (``from``/``to`` on ``start_datetime``, ``page``/``items_per_page``); groups
    and entities come unpaged; customers page with ``page``/``items_per_page``.
  * A ``status`` filter (comma-separated, case-insensitive) on tasks and bookings, as the notes'
    ``--task-status``/``--booking-status`` imply; its real name is unconfirmed.
  * ``items_per_page`` above 500 is silently capped at 500, and ``page_size`` (the name public
    clients guess) is silently ignored, so a client asking for 1000 gets 500 and must page by
    short pages, not by its own size. The answer carries no total: paging ends on a page shorter
    than the size in effect (an exactly full last page is followed by an empty one). Page URLs do
    not depend on earlier answers, so pages can be fetched concurrently.
  * ``from``/``to`` select on ``start_datetime`` (the schedule), not on modification: there is no
    documented updated-since filter, so a window delta misses edits to tasks outside the window.
  * Order: ``start_datetime`` then id. A task rescheduled between two pages moves and shifts the
    rest (a record can be skipped or repeated within one run).
  * Errors: 401 ``{"message": "Invalid credentials", "description": "X-Auth-Key or X-Auth-Token is
    missing or invalid"}``; 429 ``{"message": "Rate limit exceeded"}`` with ``Retry-After``; 404
    for an unknown task id. No rate-limit numbers are published (public clients assume 30/min).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

from .restkit import BadRequest, ScriptedFake, int_arg, iso_naive_utc, parse_iso
from .server import Faults, Request, Response, as_utc, route

MAX_ITEMS_PER_PAGE = 500
TASK_STATUSES = ("NOTSTARTED", "ENROUTE", "STARTED", "COMPLETE", "EXCEPTION", "CANCELLED")
PAGED_DEFAULTS = {"tasks": 500, "bookings": 500, "customers": 500, "status": 100}
CITIES = [("Austin", "TX"), ("Denver", "CO"), ("Tampa", "FL")]


class FakeArrivy(ScriptedFake):
    """Fake Arrivy account. Records are dicts as the API renders them, minus datetimes
    (kept as aware datetimes under ``_start``/``_end``/``_time`` and rendered per request)."""

    messages = {**ScriptedFake.messages, 404: "Not found", 429: "Rate limit exceeded"}

    def __init__(self, auth_key: str = "key-1234", auth_token: str = "tok-abcd", *,
                 faults: Faults | None = None, data_seed: int = 1,
                 max_items_per_page: int = MAX_ITEMS_PER_PAGE) -> None:
        super().__init__(faults)
        self.auth_key, self.auth_token = auth_key, auth_token
        self.max_items_per_page = max_items_per_page
        self.store: dict[str, dict[int, dict[str, Any]]] = {
            k: {} for k in ("tasks", "bookings", "entities", "groups", "customers")}
        self.statuses: dict[int, list[dict[str, Any]]] = {}
        self._rng = random.Random(data_seed)
        self._next_id = 5348024557502464

    # ----- test-side data API ------------------------------------------------
    def new_id(self) -> int:
        self._next_id += self._rng.randint(1, 9_999_999)
        return self._next_id

    def add(self, kind: str, **fields: Any) -> dict[str, Any]:
        rec = {"id": self.new_id(), **fields}
        self.store[kind][rec["id"]] = rec
        return rec

    def seed(self, start: datetime, tasks: int = 0, bookings: int = 0, crew: int = 3, groups: int = 2,
             unscheduled_every: int = 0, statuses_per_task: int = 2) -> None:
        """Crew, groups, tasks (one every 90 min from ``start``) with status histories, bookings."""
        crew_ids = [self.add("entities", **self._entity(i))["id"] for i in range(crew)]
        group_ids = [self.add("groups", name=f"Region {i}", description=None)["id"] for i in range(groups)]
        for i in range(tasks):
            unscheduled = bool(unscheduled_every) and i % unscheduled_every == unscheduled_every - 1
            task = self.add("tasks", **self._task(i, start + timedelta(minutes=90 * i), crew_ids, group_ids,
                                                  unscheduled))
            for j in range(statuses_per_task):
                self.add_status(task["id"], TASK_STATUSES[j % 4], task["_start"] + timedelta(minutes=20 * j))
        for i in range(bookings):
            self.add("bookings", **self._booking(i, start + timedelta(hours=5 * i)))

    def add_status(self, task_id: int, kind: str, when: datetime) -> dict[str, Any]:
        entry = {"id": self.new_id(), "type": kind, "_time": as_utc(when), "reporter_name": "Steven",
                 "reporter_id": None, "source": "app", "extra_fields": {"notes": None, "visible_to_customer": True}}
        self.statuses.setdefault(task_id, []).append(entry)
        self.store["tasks"][task_id]["status"] = kind
        return entry

    def change(self, kind: str, ids: Iterable[int], **changes: Any) -> None:
        """Change fields (``_start=...`` reschedules a task or booking)."""
        for rid in ids:
            self.store[kind][rid].update(changes)

    def delete(self, kind: str, ids: Iterable[int]) -> None:
        for rid in ids:
            self.store[kind].pop(rid, None)
            if kind == "tasks":
                self.statuses.pop(rid, None)

    def _entity(self, i: int) -> dict[str, Any]:
        return {"name": f"Crew {i}", "type": "Day-Shift Tech", "email": f"crew{i}@example.com",
                "phone": f"+1512555{1000 + i}", "color": "888888", "details": None, "extra_fields": {},
                "external_id": f"EMP-{i:04d}", "is_disabled": False, "group_ids": []}

    def _task(self, i: int, when: datetime, crew: list[int], groups: list[int], unscheduled: bool) -> dict[str, Any]:
        r = self._rng
        city, state = r.choice(CITIES)
        return {"title": f"Install #{i}", "_start": as_utc(when), "_end": as_utc(when) + timedelta(hours=2),
                "_tz": timedelta(hours=-6), "unscheduled": unscheduled, "status": "NOTSTARTED",
                "entity_ids": r.sample(crew, min(2, len(crew))) if crew else [],
                "group_id": r.choice(groups) if groups else None, "customer_id": None,
                "customer_first_name": r.choice(["Ana", "Ben", "Chloé"]), "customer_last_name": "Smith",
                "customer_city": city, "customer_state": state, "customer_country": "USA",
                "external_id": f"JOB-{i:05d}", "source": "api", "extra_fields": {"hourly_rate": "85"},
                "url_safe_id": f"ag{i:08x}"}

    def _booking(self, i: int, when: datetime) -> dict[str, Any]:
        return {"title": f"Estimate #{i}", "_start": as_utc(when), "_end": as_utc(when) + timedelta(hours=1),
                "_tz": timedelta(hours=-6), "status": self._rng.choice(["REQUESTED", "CONFIRMED", "CANCELLED"]),
                "customer_first_name": "Dev", "customer_last_name": "Okafor", "task_id": None,
                "extra_fields": {}}

    # ----- HTTP ------------------------------------------------------------
    def routes(self):
        return [route("GET", r"/api/tasks", lambda r: self._dated(r, "tasks")),
                route("GET", r"/api/bookings", lambda r: self._dated(r, "bookings")),
                route("GET", r"/api/tasks/(?P<task>\d+)/status", self._statuses),
                route("GET", r"/api/entities", lambda r: self._unpaged(r, "entities")),
                route("GET", r"/api/groups", lambda r: self._unpaged(r, "groups")),
                route("GET", r"/api/customers", self._customers)]

    def is_authorized(self, req: Request) -> bool:
        return (req.headers.get("x-auth-key") == self.auth_key
                and req.headers.get("x-auth-token") == self.auth_token)

    def unauthorized(self, req: Request) -> Response:
        return Response(401, {"message": "Invalid credentials",
                              "description": "X-Auth-Key or X-Auth-Token is missing or invalid"})

    def _page_of(self, req: Request, kind: str, make_rows: Callable[[], list[dict[str, Any]]]) -> Response:
        """One page of a page/items_per_page list; ``page_hook`` runs before the rows are cut."""
        try:
            page = int_arg(req, "page", 1)
            size = min(int_arg(req, "items_per_page", PAGED_DEFAULTS[kind]), self.max_items_per_page)
            self.before_page(kind, page)
            rows = make_rows()
        except BadRequest as exc:
            return self.message(exc.status, str(exc))
        return Response(200, [_render(r) for r in rows[(page - 1) * size: page * size]], page=page)

    def _dated(self, req: Request, kind: str) -> Response:
        def rows() -> list[dict[str, Any]]:
            ordered = sorted(self.store[kind].values(), key=lambda r: (r["_start"], r["id"]))
            return [r for r in ordered if self._dated_match(r, req, kind)]
        return self._page_of(req, kind, rows)

    def _dated_match(self, rec: dict[str, Any], req: Request, kind: str) -> bool:
        start = parse_iso(_arrivy_time(req.arg("from"))) if req.arg("from") else None
        end = parse_iso(_arrivy_time(req.arg("to"))) if req.arg("to") else None
        statuses = {s.strip().upper() for s in (req.arg("status") or "").split(",") if s.strip()}
        checks = [start is None or rec["_start"] >= start, end is None or rec["_start"] <= end,
                  not statuses or str(rec.get("status", "")).upper() in statuses]
        if kind == "tasks":
            wanted_unscheduled = (req.arg("unscheduled") or "false").lower() == "true"
            checks.append(bool(rec.get("unscheduled")) == wanted_unscheduled)
            for param in ("customer_id", "external_id"):
                checks.append(not req.arg(param) or str(rec.get(param)) == req.arg(param))
            checks.append(not req.arg("entity_id") or int(req.arg("entity_id")) in rec["entity_ids"])
        return all(checks)

    def _statuses(self, req: Request) -> Response:
        task_id = int(req.params["task"])
        if task_id not in self.store["tasks"]:
            return self.not_found(req)
        return self._page_of(req, "status", lambda: list(self.statuses.get(task_id, [])))

    def _unpaged(self, req: Request, kind: str) -> Response:
        rows = list(self.store[kind].values())
        for param in ("external_id", "email"):
            if req.arg(param):
                rows = [r for r in rows if r.get(param) == req.arg(param)]
        return Response(200, [_render(r) for r in rows])

    def _customers(self, req: Request) -> Response:
        return self._page_of(req, "customers", lambda: list(self.store["customers"].values()))


def _arrivy_time(text: str) -> str:
    """An unencoded ``+`` in ``from``/``to`` reaches the server as a space: refuse it, as the
    docs warn that it must be URL-encoded."""
    if " " in text:
        raise BadRequest(f"invalid datetime {text!r}: encode '+' in the offset as %2B")
    return text


def _render(rec: dict[str, Any]) -> dict[str, Any]:
    """API view: private ``_`` fields become UTC datetimes without offset plus the original
    ISO string in the record's own zone."""
    out = {k: v for k, v in rec.items() if not k.startswith("_")}
    zone = rec.get("_tz", timedelta(0))
    for private, public in (("_start", "start_datetime"), ("_end", "end_datetime"), ("_time", "time")):
        if private in rec:
            out[public] = iso_naive_utc(rec[private])
            local = rec[private].astimezone(timezone(zone))
            out[f"{public}_original_iso_str"] = local.replace(microsecond=0).isoformat()
    return out

