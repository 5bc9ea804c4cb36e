"""Real-HTTP tests of the issue-24 fakes (Arrivy, SalesRabbit, LeadConduit, HighLevel v2): each
must page, refuse, throttle and filter the way its docstring says before specs are tested on it."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any, Callable, Iterator

import pytest
import requests

from tests.fakes import FakeArrivy, FakeGoHighLevel, FakeLeadConduit, FakeSalesRabbit
from tests.fakes.restkit import utc

T0 = utc(2025, 3, 1, 8)


def session(headers: dict[str, str]) -> requests.Session:
    s = requests.Session()
    s.headers.update(headers)
    return s


# --------------------------------------------------------------------------- #
# Arrivy
# --------------------------------------------------------------------------- #
@pytest.fixture
def arrivy() -> Iterator[FakeArrivy]:
    with FakeArrivy() as fake:
        fake.seed(T0, tasks=1203, bookings=40, unscheduled_every=10)
        yield fake


@pytest.fixture
def ar(arrivy) -> requests.Session:
    return session({"X-Auth-Key": arrivy.auth_key, "X-Auth-Token": arrivy.auth_token})


def arrivy_walk(s: requests.Session, fake: FakeArrivy, path: str, **params: Any) -> list[list[dict]]:
    """Pages until one is shorter than the size the API applied (no total is sent)."""
    pages, page = [], 1
    while True:
        resp = s.get(f"{fake.base_url}{path}", params={**params, "page": page})
        resp.raise_for_status()
        pages.append(resp.json())
        if not pages[-1] or len(pages[-1]) < len(pages[0]):
            return pages
        page += 1


def test_arrivy_tasks_page_walk_sees_every_scheduled_task_once(arrivy, ar):
    pages = arrivy_walk(ar, arrivy, "/api/tasks")
    ids = [t["id"] for p in pages for t in p]
    scheduled = {i for i, t in arrivy.store["tasks"].items() if not t["unscheduled"]}
    assert len(ids) == len(set(ids)) == len(scheduled) == 1083
    assert set(ids) == scheduled
    assert [len(p) for p in pages] == [500, 500, 83]
    unscheduled = ar.get(f"{arrivy.base_url}/api/tasks", params={"unscheduled": "true"}).json()
    assert len(unscheduled) == 120 and all(t["unscheduled"] for t in unscheduled)


def test_arrivy_items_per_page_capped_at_500_and_page_size_ignored(arrivy, ar):
    assert len(ar.get(f"{arrivy.base_url}/api/tasks", params={"items_per_page": 1000}).json()) == 500
    assert len(ar.get(f"{arrivy.base_url}/api/tasks", params={"page_size": 50}).json()) == 500
    assert len(ar.get(f"{arrivy.base_url}/api/tasks", params={"items_per_page": 50}).json()) == 50
    assert ar.get(f"{arrivy.base_url}/api/tasks", params={"items_per_page": 0}).status_code == 400


def test_arrivy_from_to_window_and_time_format(arrivy, ar):
    params = {"from": "2025-03-01T02:00:00-06:00", "to": "2025-03-01T05:00:00-06:00"}
    tasks = ar.get(f"{arrivy.base_url}/api/tasks", params=params).json()
    assert [t["start_datetime"] for t in tasks] == ["2025-03-01T08:00:00", "2025-03-01T09:30:00", "2025-03-01T11:00:00"]
    assert tasks[0]["start_datetime_original_iso_str"] == "2025-03-01T02:00:00-06:00"
    raw_plus = f"{arrivy.base_url}/api/tasks?from=2025-03-01T02:00:00+00:00"
    assert ar.get(raw_plus).status_code == 400  # '+' not URL-encoded arrives as a space


def test_arrivy_status_filter_history_and_other_entities(arrivy, ar):
    done = ar.get(f"{arrivy.base_url}/api/tasks", params={"status": "enroute", "items_per_page": 500}).json()
    assert done and all(t["status"] == "ENROUTE" for t in done)
    task_id = done[0]["id"]
    history = ar.get(f"{arrivy.base_url}/api/tasks/{task_id}/status").json()
    assert [h["type"] for h in history] == ["NOTSTARTED", "ENROUTE"] and "time_original_iso_str" in history[0]
    assert ar.get(f"{arrivy.base_url}/api/tasks/1/status").status_code == 404
    assert len(ar.get(f"{arrivy.base_url}/api/entities").json()) == 3
    assert len(ar.get(f"{arrivy.base_url}/api/groups").json()) == 2
    assert len(ar.get(f"{arrivy.base_url}/api/bookings").json()) == 40


def test_arrivy_reschedule_between_pages_skips_a_task(arrivy, ar):
    ordered = sorted((t for t in arrivy.store["tasks"].values() if not t["unscheduled"]),
                     key=lambda t: (t["_start"], t["id"]))
    first = ar.get(f"{arrivy.base_url}/api/tasks", params={"items_per_page": 100}).json()
    arrivy.page_hook = lambda entity, page: page == 2 and arrivy.change(
        "tasks", [first[0]["id"]], _start=utc(2030, 1, 1))
    second = ar.get(f"{arrivy.base_url}/api/tasks", params={"items_per_page": 100, "page": 2}).json()
    assert second[0]["id"] == ordered[101]["id"]  # the old first task of page 2 slid onto page 1
    assert ordered[100]["id"] not in {t["id"] for t in first + second}


def test_arrivy_auth_refused_with_vendor_body(arrivy):
    resp = requests.get(f"{arrivy.base_url}/api/tasks", headers={"X-Auth-Key": arrivy.auth_key})
    assert resp.status_code == 401
    assert resp.json() == {"message": "Invalid credentials",
                           "description": "X-Auth-Key or X-Auth-Token is missing or invalid"}


def test_arrivy_injected_429_then_5xx_then_ok(arrivy, ar):
    arrivy.inject(429, count=2)
    arrivy.inject(503)
    statuses = [ar.get(f"{arrivy.base_url}/api/groups").status_code for _ in range(4)]
    assert statuses == [429, 429, 503, 200]
    assert arrivy.counters.throttled == 2 and arrivy.counters.injected_errors == 1
    assert arrivy.count(path_contains="/api/groups") == 4


# --------------------------------------------------------------------------- #
# SalesRabbit
# --------------------------------------------------------------------------- #
@pytest.fixture
def rabbit() -> Iterator[FakeSalesRabbit]:
    with FakeSalesRabbit() as fake:
        fake.seed(users=4, leads=2501, start=T0)
        yield fake


@pytest.fixture
def sr(rabbit) -> requests.Session:
    return session({"Authorization": f"Bearer {rabbit.token}"})


def sr_walk(s: requests.Session, fake: FakeSalesRabbit, path: str, headers: dict | None = None,
            **params: Any) -> list[Any]:
    out, page = [], 1
    while True:
        resp = s.get(f"{fake.base_url}{path}", params={**params, "page": page}, headers=headers or {})
        resp.raise_for_status()
        body = resp.json()
        out.append(body["data"])
        if not body["meta"]["morePages"]:
            return out
        page += 1


def test_salesrabbit_leads_walk_every_lead_once(rabbit, sr):
    pages = sr_walk(sr, rabbit, "/leads", perPage=1000)
    ids = [lead["id"] for p in pages for lead in p]
    assert [len(p) for p in pages] == [1000, 1000, 501]
    assert len(ids) == len(set(ids)) == 2501 and set(ids) == set(rabbit.leads)
    assert ids == sorted(ids, reverse=True)  # newest first by default
    lead = pages[0][0]
    assert lead["dateModified"].endswith("+00:00") and len(lead["dateModified"]) == 25
    assert lead["customFields"] == '"{}"'  # doubly encoded, as the real API sends it


def test_salesrabbit_per_page_above_2000_is_400(rabbit, sr):
    assert len(sr.get(f"{rabbit.base_url}/leads", params={"perPage": 2000}).json()["data"]) == 2000
    resp = sr.get(f"{rabbit.base_url}/leads", params={"perPage": 2001})
    assert resp.status_code == 400 and resp.json() == {"message": "perPage must be between 1 and 2000"}


def test_salesrabbit_if_modified_since_header_returns_only_changed(rabbit, sr):
    changed = [13010, 13500, 14000]
    rabbit.touch(changed, utc(2025, 6, 1, 12), status="Dead")
    since = {"If-Modified-Since": "2025-06-01T00:00:00+00:00"}
    leads = [lead for p in sr_walk(sr, rabbit, "/leads", headers=since) for lead in p]
    assert sorted(lead["id"] for lead in leads) == changed
    histories = sr_walk(sr, rabbit, "/leadStatusHistories", headers=since)[0]
    assert sorted(histories) == [str(i) for i in changed]  # an object keyed by lead id
    assert histories["13500"][-1]["name"] == "Dead" and histories["13500"][-1]["abbreviation"] == "DE"
    same_second = {"If-Modified-Since": "Sun, 01 Jun 2025 12:00:00 GMT"}  # an HTTP-date works too
    assert len(sr.get(f"{rabbit.base_url}/leads", headers=same_second).json()["data"]) == 3  # inclusive
    later = {"If-Modified-Since": "2025-06-01T12:00:01+00:00"}
    assert sr.get(f"{rabbit.base_url}/leads", headers=later).json()["data"] == []
    assert sr.get(f"{rabbit.base_url}/leadStatusHistories", headers=later).json()["data"] == []  # PHP: []
    status_since = {"If-Status-Modified-Since": "2025-06-01T12:00:00+00:00"}
    assert sorted(r["id"] for r in sr.get(f"{rabbit.base_url}/leads", headers=status_since).json()["data"]) == changed
    bad = sr.get(f"{rabbit.base_url}/leads", headers={"If-Modified-Since": "yesterday"})
    assert bad.status_code == 400


def test_salesrabbit_new_lead_mid_walk_repeats_a_record(rabbit, sr):
    rabbit.page_hook = lambda entity, page: page == 2 and rabbit.add_lead(utc(2026, 1, 1))
    pages = sr_walk(sr, rabbit, "/leads", perPage=2000)
    ids = [lead["id"] for p in pages for lead in p]
    assert len(ids) == 2502 and len(set(ids)) == 2501  # newest-first offset pages shift by one


def test_salesrabbit_users_and_deleted_leads_vanish(rabbit, sr):
    users = sr.get(f"{rabbit.base_url}/users").json()
    assert len(users["data"]) == 4 and users["meta"] == {"morePages": False}
    rabbit.delete([13001, 13002])
    ids = {lead["id"] for p in sr_walk(sr, rabbit, "/leads", perPage=2000) for lead in p}
    assert len(ids) == 2499 and not ids & {13001, 13002}


def test_salesrabbit_auth_and_429(rabbit, sr):
    resp = requests.get(f"{rabbit.base_url}/leads", headers={"Authorization": "Bearer wrong"})
    assert resp.status_code == 401 and resp.json() == {"message": "Unauthorized"}
    rabbit.inject(429, path_contains="/leads")
    throttled = sr.get(f"{rabbit.base_url}/leads")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
    assert sr.get(f"{rabbit.base_url}/leads").status_code == 200


# --------------------------------------------------------------------------- #
# LeadConduit
# --------------------------------------------------------------------------- #
@pytest.fixture
def conduit() -> Iterator[FakeLeadConduit]:
    with FakeLeadConduit() as fake:
        fake.seed(1200, T0, recipients=1, partial_every=50)
        yield fake


@pytest.fixture
def lc(conduit) -> requests.Session:
    token = base64.b64encode(f"API:{conduit.api_key}".encode()).decode()
    return session({"Authorization": f"Basic {token}"})


def lc_walk(s: requests.Session, fake: FakeLeadConduit, after_id: str | None = None,
            limit: int = 1000) -> list[list[dict]]:
    pages = []
    while True:
        params = {"sort": "asc", "limit": limit, **({"after_id": after_id} if after_id else {})}
        resp = s.get(f"{fake.base_url}/events", params=params)
        resp.raise_for_status()
        pages.append(resp.json())
        if not pages[-1]:
            return pages
        after_id = pages[-1][-1]["id"]


def test_leadconduit_after_id_walk_sees_every_event_once(conduit, lc):
    pages = lc_walk(lc, conduit)
    ids = [e["id"] for p in pages for e in p]
    assert [len(p) for p in pages] == [1000, 1000, 400, 0]
    assert ids == [e.id for e in conduit.events] and len(set(ids)) == 2400
    leads = {e["vars"]["lead"]["id"] for p in pages for e in p}
    assert len(leads) == 1200  # two events (source + recipient) per lead
    partial = [e for p in pages for e in p if e["vars"]["lead"]["email"] is None]
    assert len(partial) == 48 and all(e["vars"]["lead"]["phone_1"] == "" for e in partial)
    first = pages[0][0]
    assert first["type"] == "source" and isinstance(first["start_timestamp"], int)
    assert first["expires_at"].endswith("Z")


def test_leadconduit_default_desc_with_after_id_skips_the_middle(conduit, lc):
    anchor = conduit.events[0].id
    newest = lc.get(f"{conduit.base_url}/events", params={"after_id": anchor, "limit": 10}).json()
    assert [e["id"] for e in newest] == [e.id for e in conduit.events[-10:]][::-1]


def test_leadconduit_limit_above_1000_is_400_and_ids_checked(conduit, lc):
    assert len(lc.get(f"{conduit.base_url}/events", params={"limit": 1000}).json()) == 1000
    assert len(lc.get(f"{conduit.base_url}/events").json()) == 100
    resp = lc.get(f"{conduit.base_url}/events", params={"limit": 1001})
    assert resp.status_code == 400 and "1000" in resp.json()["message"]
    assert lc.get(f"{conduit.base_url}/events", params={"after_id": "not-an-id"}).status_code == 400


def test_leadconduit_delta_after_id_returns_only_new_events(conduit, lc):
    high_water = conduit.events[-1].id
    changed = [conduit.events[10].body["vars"]["lead"], conduit.events[900].body["vars"]["lead"]]
    for lead in changed:
        conduit.add_event(utc(2025, 6, 1), "source", {**lead, "state": "NM"})
    delta = [e for p in lc_walk(lc, conduit, after_id=high_water) for e in p]
    assert sorted(e["vars"]["lead"]["id"] for e in delta) == sorted(lead["id"] for lead in changed)
    assert all(e["vars"]["lead"]["state"] == "NM" for e in delta)


def test_leadconduit_start_end_include_and_expiry(conduit, lc):
    window = {"start": "2025-03-01T08:00:00Z", "end": "2025-03-01T08:01:00Z", "sort": "asc"}
    events = lc.get(f"{conduit.base_url}/events", params=window).json()
    assert {e["vars"]["submission"]["timestamp"][:16] for e in events} <= {"2025-03-01T08:00", "2025-03-01T08:01"}
    slim = lc.get(f"{conduit.base_url}/events", params={"include": "vars.lead.email,type", "limit": 1}).json()[0]
    assert set(slim) == {"id", "type", "vars"} and set(slim["vars"]) == {"lead"}
    both = lc.get(f"{conduit.base_url}/events", params={"include": "type", "exclude": "vars"})
    assert both.status_code == 400
    assert conduit.expire(T0 + timedelta(hours=1)) > 0
    assert len([e for p in lc_walk(lc, conduit) for e in p]) == len(conduit.events)


def test_leadconduit_basic_auth_refused(conduit):
    wrong = base64.b64encode(f"X:{conduit.api_key}".encode()).decode()
    resp = requests.get(f"{conduit.base_url}/events", headers={"Authorization": f"Basic {wrong}"})
    assert resp.status_code == 401
    assert resp.json() == {"message": "Authorization information is missing or invalid."}
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="LeadConduit"'


# --------------------------------------------------------------------------- #
# HighLevel v2
# --------------------------------------------------------------------------- #
@pytest.fixture
def ghl() -> Iterator[FakeGoHighLevel]:
    with FakeGoHighLevel() as fake:
        fake.seed_opportunities(1050, T0, same_time_every=4)
        fake.seed_contacts(230, T0)
        yield fake


@pytest.fixture
def gs(ghl) -> requests.Session:
    return session({"Authorization": f"Bearer {ghl.token}", "Version": "2021-07-28"})


def ghl_walk(s: requests.Session, fake: FakeGoHighLevel, path: str, key: str, loc: str,
             cursor: Callable[[dict], dict] | None = None, **params: Any) -> list[list[dict]]:
    pages, extra = [], {}
    while True:
        resp = s.get(f"{fake.base_url}{path}", params={loc: fake.location_id, "limit": 100, **params, **extra})
        resp.raise_for_status()
        body = resp.json()
        pages.append(body[key])
        meta = body["meta"]
        if meta["nextPage"] is None:
            return pages
        extra = (cursor or (lambda m: {"startAfter": m["startAfter"], "startAfterId": m["startAfterId"]}))(meta)


def test_ghl_opportunities_cursor_walk_every_record_once_despite_ties(ghl, gs):
    pages = ghl_walk(gs, ghl, "/opportunities/search", "opportunities", "location_id")
    ids = [o["id"] for p in pages for o in p]
    assert [len(p) for p in pages] == [100] * 10 + [50]
    assert len(ids) == len(set(ids)) == 1050 and set(ids) == ghl.ids("opportunities")
    created = [o["createdAt"] for p in pages for o in p]
    assert created == sorted(created, reverse=True) and created[0].endswith("Z") and len(created[0]) == 24


def test_ghl_start_after_alone_skips_ties(ghl, gs):
    pages = ghl_walk(gs, ghl, "/opportunities/search", "opportunities", "location_id",
                     cursor=lambda m: {"startAfter": m["startAfter"]})
    ids = [o["id"] for p in pages for o in p]
    assert len(ids) == len(set(ids)) < 1050  # records sharing the boundary millisecond are lost


def test_ghl_last_page_meta_and_empty_follow_up(ghl, gs):
    url = f"{ghl.base_url}/opportunities/search"
    last = gs.get(url, params={"location_id": ghl.location_id, "limit": 100, "page": 11}).json()
    meta = last["meta"]
    assert len(last["opportunities"]) == 50 and meta["nextPage"] is None and meta["nextPageUrl"] is None
    assert meta["startAfterId"] == last["opportunities"][-1]["id"] and meta["total"] == 1050
    middle = gs.get(url, params={"location_id": ghl.location_id, "status": "open", "limit": 7}).json()["meta"]
    assert "status=open" in middle["nextPageUrl"] and f"startAfterId={middle['startAfterId']}" in middle["nextPageUrl"]
    follow = gs.get(middle["nextPageUrl"]).json()["opportunities"]
    assert follow and all(o["status"] == "open" for o in follow)
    after = gs.get(url, params={"location_id": ghl.location_id, "startAfter": meta["startAfter"],
                                "startAfterId": meta["startAfterId"]}).json()
    assert after["opportunities"] == [] and after["meta"]["startAfterId"] is None


def test_ghl_limit_above_100_is_422_and_location_checks(ghl, gs):
    url = f"{ghl.base_url}/opportunities/search"
    resp = gs.get(url, params={"location_id": ghl.location_id, "limit": 101})
    assert resp.status_code == 422
    assert resp.json() == {"statusCode": 422, "message": ["limit must not be greater than 100"],
                           "error": "Unprocessable Entity"}
    assert len(gs.get(url, params={"location_id": ghl.location_id}).json()["opportunities"]) == 20
    assert gs.get(url, params={"locationId": ghl.location_id}).status_code == 422  # snake case here
    other = gs.get(url, params={"location_id": "someoneElse"})
    assert other.status_code == 403 and other.json()["message"] == "The token does not have access to this location."


def test_ghl_auth_and_version_header(ghl):
    url = f"{ghl.base_url}/contacts/"
    bad = requests.get(url, params={"locationId": ghl.location_id},
                       headers={"Authorization": "Bearer nope", "Version": "2021-07-28"})
    assert bad.status_code == 401 and bad.json() == {"statusCode": 401, "message": "Invalid JWT"}
    no_version = requests.get(url, params={"locationId": ghl.location_id},
                              headers={"Authorization": f"Bearer {ghl.token}"})
    assert no_version.status_code == 400


def test_ghl_contacts_walk_and_mark_and_sweep_ids(ghl, gs):
    pages = ghl_walk(gs, ghl, "/contacts/", "contacts", "locationId")
    assert sum(len(p) for p in pages) == 230 and pages[0][0]["dateAdded"].endswith("Z")
    gone = sorted(ghl.ids("opportunities"))[:200]
    ghl.delete("opportunities", gone)
    ids = {o["id"] for p in ghl_walk(gs, ghl, "/opportunities/search", "opportunities", "location_id") for o in p}
    assert len(ids) == 850 and not ids & set(gone)


def test_ghl_delete_between_pages_does_not_shift_the_cursor(ghl, gs):
    first = ghl_walk(gs, ghl, "/opportunities/search", "opportunities", "location_id")
    behind, ahead = first[0][3]["id"], first[5][0]["id"]
    calls = []
    ghl.page_hook = lambda entity, page: calls.append(page) or (
        len(calls) == 2 and ghl.delete("opportunities", [behind, ahead]))
    ids = [o["id"] for p in ghl_walk(gs, ghl, "/opportunities/search", "opportunities", "location_id") for o in p]
    assert len(ids) == len(set(ids)) == 1049  # nothing repeated or skipped around the deletions
    assert behind in ids and ahead not in ids


def test_ghl_touch_moves_updated_at_only(ghl, gs):
    target = sorted(ghl.ids("opportunities"))[0]
    ghl.touch("opportunities", [target], utc(2025, 7, 1), status="won")
    found = gs.get(f"{ghl.base_url}/opportunities/search",
                   params={"location_id": ghl.location_id, "id": target}).json()["opportunities"][0]
    assert found["updatedAt"] == "2025-07-01T00:00:00.000Z" and found["status"] == "won"
    won = ghl_walk(gs, ghl, "/opportunities/search", "opportunities", "location_id", status="won")
    assert target in {o["id"] for p in won for o in p}


def test_ghl_burst_limit_429_and_headers():
    with FakeGoHighLevel(burst_max=5, burst_window_s=60, daily_limit=8) as fake:
        fake.seed_contacts(3, T0)
        s = session({"Authorization": f"Bearer {fake.token}", "Version": "2021-07-28"})
        answers = [s.get(f"{fake.base_url}/contacts/", params={"locationId": fake.location_id}) for _ in range(7)]
        assert [a.status_code for a in answers] == [200] * 5 + [429, 429]
        assert [a.headers["X-RateLimit-Remaining"] for a in answers[:6]] == ["4", "3", "2", "1", "0", "0"]
        assert answers[0].headers["X-RateLimit-Interval-Milliseconds"] == "60000"
        assert answers[0].headers["X-RateLimit-Max"] == "5"
        assert answers[5].json() == {"statusCode": 429, "message": "Too Many Requests"}
        assert "Retry-After" not in answers[5].headers


def test_ghl_daily_cap_429_with_zero_daily_remaining():
    with FakeGoHighLevel(burst_max=100, daily_limit=3) as fake:
        s = session({"Authorization": f"Bearer {fake.token}", "Version": "2021-07-28"})
        answers = [s.get(f"{fake.base_url}/contacts/", params={"locationId": fake.location_id}) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["X-RateLimit-Daily-Remaining"] for a in answers] == ["2", "1", "0", "0"]
        assert answers[0].headers["X-RateLimit-Limit-Daily"] == "3"
