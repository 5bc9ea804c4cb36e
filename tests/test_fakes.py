"""Real-HTTP tests of the fake CRM APIs (tests/fakes): they must behave like
the real services before the runtime is tested against them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
import requests

from tests.fakes import FakeCallRail, FakeHubSpot, Faults

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
NOW = datetime(2025, 6, 15, 12, 0, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- #
# fixtures
# --------------------------------------------------------------------------- #
@pytest.fixture
def hubspot() -> Iterator[FakeHubSpot]:
    with FakeHubSpot(token="tok", search_rate_limit=None) as fake:
        yield fake


@pytest.fixture
def hs_session() -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = "Bearer tok"
    return s


@pytest.fixture
def callrail() -> Iterator[FakeCallRail]:
    with FakeCallRail(api_key="key", account_id="ACC1", now=NOW) as fake:
        yield fake


@pytest.fixture
def cr_session() -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = 'Token token="key"'
    return s


def search(session: requests.Session, fake: FakeHubSpot, otype: str, **body: Any) -> requests.Response:
    return session.post(f"{fake.base_url}/crm/v3/objects/{otype}/search", json=body)


def search_all(session: requests.Session, fake: FakeHubSpot, otype: str, **body: Any) -> list[dict]:
    results, after = [], None
    while True:
        resp = search(session, fake, otype, **body, **({"after": after} if after else {}))
        resp.raise_for_status()
        data = resp.json()
        results += data["results"]
        after = data.get("paging", {}).get("next", {}).get("after")
        if not after:
            return results


def calls_url(fake: FakeCallRail, resource: str = "calls") -> str:
    return f"{fake.base_url}/v3/a/{fake.account_id}/{resource}.json"


def gte(prop: str, value: str) -> list[dict]:
    return [{"filters": [{"propertyName": prop, "operator": "GTE", "value": value}]}]


# --------------------------------------------------------------------------- #
# HubSpot
# --------------------------------------------------------------------------- #
def test_hubspot_search_pages_collect_every_record(hubspot, hs_session):
    ids = hubspot.seed("contacts", 1234, T0)
    got = search_all(hs_session, hubspot, "contacts", limit=100)
    assert [r["id"] for r in got] == ids
    first = got[0]
    assert set(first) == {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert all(v is None or isinstance(v, str) for v in first["properties"].values())
    assert first["properties"]["createdate"] == "2024-01-01T00:00:00.000Z"
    assert hubspot.counters.ok == 13


def test_hubspot_search_response_shape_and_properties(hubspot, hs_session):
    hubspot.seed("deals", 3, T0)
    data = search(hs_session, hubspot, "deals", limit=2, properties=["amount", "dealname"]).json()
    assert data["total"] == 3
    assert data["paging"] == {"next": {"after": "2"}}
    assert set(data["results"][0]["properties"]) == {"amount", "dealname"}
    assert isinstance(data["results"][0]["properties"]["amount"], str)
    default = search(hs_session, hubspot, "companies").json()
    assert default == {"total": 0, "results": []}


def test_hubspot_10k_cap_answers_400(hubspot, hs_session):
    hubspot.seed("contacts", 10_050, T0, timedelta(seconds=1))
    ok = search(hs_session, hubspot, "contacts", limit=100, after="9900")
    assert ok.status_code == 200
    assert ok.json()["paging"]["next"]["after"] == "10000"  # the real API leads you into the wall
    assert ok.json()["total"] == 10_050
    for after, limit in (("10000", 100), ("9950", 100), ("10000", 1)):
        resp = search(hs_session, hubspot, "contacts", limit=limit, after=after)
        assert resp.status_code == 400
        assert resp.json()["category"] == "VALIDATION_ERROR"
        assert resp.json()["status"] == "error"


def test_hubspot_limit_above_max_is_400(hubspot, hs_session):
    hubspot.seed("contacts", 250, T0)
    assert len(search(hs_session, hubspot, "contacts", limit=200).json()["results"]) == 200
    refused = search(hs_session, hubspot, "contacts", limit=201)
    assert refused.status_code == 400 and refused.json()["category"] == "VALIDATION_ERROR"
    assert len(search(hs_session, hubspot, "contacts").json()["results"]) == 10  # the default limit


def test_hubspot_hs_object_id_filters_and_sorts_as_a_number(hubspot, hs_session):
    ids = hubspot.seed("contacts", 30, T0, timedelta(0))  # one createdate, like a bulk import
    by_id = [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]
    after = [{"filters": [{"propertyName": "createdate", "operator": "EQ", "value": str(int(T0.timestamp() * 1000))},
                          {"propertyName": "hs_object_id", "operator": "GT", "value": ids[9]}]}]
    got = search_all(hs_session, hubspot, "contacts", limit=7, sorts=by_id, filterGroups=after)
    assert [r["id"] for r in got] == ids[10:]


def test_hubspot_date_filters_accept_millis_and_iso(hubspot, hs_session):
    hubspot.seed("contacts", 100, T0, timedelta(hours=1))
    cutoff = T0 + timedelta(hours=90)
    millis = str(int(cutoff.timestamp() * 1000))
    by_millis = search_all(hs_session, hubspot, "contacts", limit=100,
                           filterGroups=gte("lastmodifieddate", millis))
    by_iso = search_all(hs_session, hubspot, "contacts", limit=100,
                        filterGroups=gte("lastmodifieddate", "2024-01-04T18:00:00Z"))
    assert len(by_millis) == 10 and by_millis == by_iso
    lt = search(hs_session, hubspot, "contacts", filterGroups=[{"filters": [
        {"propertyName": "createdate", "operator": "LT", "value": millis},
        {"propertyName": "createdate", "operator": "GT", "value": str(int(T0.timestamp() * 1000))},
    ]}]).json()
    assert lt["total"] == 89
    eq = search(hs_session, hubspot, "contacts", filterGroups=[{"filters": [
        {"propertyName": "createdate", "operator": "EQ", "value": millis}]}]).json()
    assert eq["total"] == 1


def test_hubspot_sorts_descending_and_or_groups(hubspot, hs_session):
    hubspot.seed("companies", 20, T0, timedelta(days=1))
    data = search(hs_session, hubspot, "companies", limit=5,
                  sorts=[{"propertyName": "hs_lastmodifieddate", "direction": "DESCENDING"}]).json()
    dates = [r["properties"]["hs_lastmodifieddate"] for r in data["results"]]
    assert dates == sorted(dates, reverse=True) and dates[0].startswith("2024-01-20")
    groups = gte("createdate", "2024-01-19T00:00:00Z") + [
        {"filters": [{"propertyName": "createdate", "operator": "LTE", "value": "2024-01-01T00:00:00Z"}]}]
    assert search(hs_session, hubspot, "companies", filterGroups=groups).json()["total"] == 3


def test_hubspot_touch_and_archive(hubspot, hs_session):
    ids = hubspot.seed("contacts", 50, T0)
    later = T0 + timedelta(days=30)
    hubspot.touch("contacts", ids[:3], when=later, firstname="Renamed")
    hubspot.archive("contacts", ids[3:5], when=later)
    changed = search_all(hs_session, hubspot, "contacts", filterGroups=gte("lastmodifieddate", "2024-01-15T00:00:00Z"))
    assert [r["id"] for r in changed] == ids[:3]
    assert changed[0]["properties"]["lastmodifieddate"] == "2024-01-31T00:00:00.000Z"
    assert changed[0]["updatedAt"] == "2024-01-31T00:00:00.000Z"
    assert search(hs_session, hubspot, "contacts").json()["total"] == 48  # archived hidden
    listed = hs_session.get(f"{hubspot.base_url}/crm/v3/objects/contacts",
                            params={"archived": "true", "limit": 1}).json()
    assert listed["results"][0]["id"] == ids[3] and listed["results"][0]["archived"] is True
    assert "archivedAt" in listed["results"][0]
    rest = hs_session.get(listed["paging"]["next"]["link"]).json()
    assert [r["id"] for r in rest["results"]] == [ids[4]] and "paging" not in rest


def test_hubspot_list_endpoint_cursor_paging(hubspot, hs_session):
    ids = hubspot.seed("deals", 250, T0)
    got, params = [], {"limit": 100, "properties": "dealname,amount"}
    while True:
        data = hs_session.get(f"{hubspot.base_url}/crm/v3/objects/deals", params=params).json()
        got += data["results"]
        if "paging" not in data:
            break
        params["after"] = data["paging"]["next"]["after"]
    assert [r["id"] for r in got] == ids
    assert set(got[0]["properties"]) == {"dealname", "amount"}


@pytest.mark.parametrize("header", [None, "Bearer wrong", "tok"])
def test_hubspot_401(hubspot, header):
    headers = {"Authorization": header} if header else {}
    resp = requests.post(f"{hubspot.base_url}/crm/v3/objects/contacts/search", json={}, headers=headers)
    assert resp.status_code == 401
    body = resp.json()
    assert body["status"] == "error" and body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found")
    assert "correlationId" in body
    assert hubspot.counters.unauthorized == 1


def test_hubspot_search_rate_limit_429_with_retry_after(hubspot, hs_session):
    hubspot.search_rate_limit = 5
    statuses = [search(hs_session, hubspot, "contacts").status_code for _ in range(8)]
    assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
    resp = search(hs_session, hubspot, "contacts")
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    assert resp.json()["errorType"] == "RATE_LIMIT" and resp.json()["policyName"] == "SECONDLY"
    assert hubspot.counters.throttled == 4
    # list endpoint is not in the search bucket
    assert hs_session.get(f"{hubspot.base_url}/crm/v3/objects/contacts").status_code == 200


# --------------------------------------------------------------------------- #
# Shared fault injection (exercised through HubSpot and CallRail)
# --------------------------------------------------------------------------- #
def test_error_rate_counts_and_is_deterministic(hs_session):
    runs = []
    for _ in range(2):
        with FakeHubSpot(token="tok", search_rate_limit=None, faults=Faults(seed=7, error_rate=0.3)) as fake:
            runs.append([search(hs_session, fake, "contacts").status_code for _ in range(30)])
            assert fake.counters.injected_errors == sum(s >= 500 for s in runs[-1])
            assert fake.count(status=200) == fake.counters.ok
    assert runs[0] == runs[1]
    assert set(runs[0]) - {200} <= {500, 502, 503} and 0 < runs[0].count(200) < 30


def test_faults_switch_at_runtime(hubspot, hs_session):
    assert search(hs_session, hubspot, "contacts").status_code == 200
    hubspot.faults.error_rate = 1.0
    hubspot.faults.error_statuses = (503,)
    assert search(hs_session, hubspot, "contacts").status_code == 503
    hubspot.faults.error_rate = 0.0
    assert search(hs_session, hubspot, "contacts").status_code == 200
    assert hubspot.statuses() == [200, 503, 200]
    assert hubspot.counters.injected_errors == 1 and hubspot.counters.requests == 3


def test_drop_rate_closes_connection_without_response(hubspot, hs_session):
    hubspot.faults.drop_rate = 1.0
    with pytest.raises(requests.ConnectionError):
        search(hs_session, hubspot, "contacts")
    hubspot.faults.drop_rate = 0.0
    assert search(hs_session, hubspot, "contacts").status_code == 200  # session recovers
    assert hubspot.counters.dropped == 1 and hubspot.log[0].status is None


def test_malformed_pages_are_truncated_json(callrail, cr_session):
    callrail.seed("users", 30)
    callrail.faults.malformed_pages = {2}
    url = calls_url(callrail, "users")
    assert cr_session.get(url, params={"per_page": 10, "page": 1}).json()["page"] == 1
    bad = cr_session.get(url, params={"per_page": 10, "page": 2})
    assert bad.status_code == 200
    with pytest.raises(ValueError):
        bad.json()
    callrail.faults.malformed_pages = set()
    callrail.faults.malformed_requests = {4}
    cr_session.get(url, params={"page": 3, "per_page": 10}).json()
    with pytest.raises(ValueError):
        cr_session.get(url, params={"page": 3, "per_page": 10}).json()
    assert callrail.counters.malformed == 2


def test_global_rate_limit_applies_to_every_endpoint(callrail, cr_session):
    callrail.faults.rate_limit_per_second = 3
    callrail.faults.retry_after_seconds = 2
    statuses = [cr_session.get(calls_url(callrail, "users")) for _ in range(5)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
    assert statuses[-1].headers["Retry-After"] == "2"
    assert callrail.counters.throttled == 2 and callrail.count(status=429, path_contains="users") == 2


# --------------------------------------------------------------------------- #
# CallRail
# --------------------------------------------------------------------------- #
def test_callrail_default_range_is_last_30_days_and_all_time_returns_all(callrail, cr_session):
    callrail.seed("calls", 730, start=NOW - timedelta(days=730), end=NOW)
    recent = cr_session.get(calls_url(callrail), params={"per_page": 250}).json()
    assert 28 <= recent["total_records"] <= 31
    oldest = min(datetime.fromisoformat(c["start_time"]) for c in recent["calls"])
    assert oldest >= NOW - timedelta(days=31)
    everything = cr_session.get(calls_url(callrail), params={"date_range": "all_time", "per_page": 250}).json()
    assert everything["total_records"] == 730 and everything["total_pages"] == 3


def test_callrail_offset_paging_collects_all_in_order(callrail, cr_session):
    callrail.seed("calls", 600, start=NOW - timedelta(days=600), end=NOW)
    got, page = [], 1
    while True:
        data = cr_session.get(calls_url(callrail), params={
            "date_range": "all_time", "per_page": 250, "page": page, "sort": "start_time", "order": "asc"}).json()
        got += data["calls"]
        if page >= data["total_pages"]:
            break
        page += 1
    assert len({c["id"] for c in got}) == 600
    times = [datetime.fromisoformat(c["start_time"]) for c in got]
    assert times == sorted(times)
    assert got[0]["start_time"].endswith("-05:00")  # rendered in the account zone


def test_callrail_start_and_end_date(callrail, cr_session):
    callrail.seed("calls", 100, start=datetime(2025, 1, 1, 5, tzinfo=timezone.utc), end=datetime(2025, 4, 11, 5, tzinfo=timezone.utc))
    jan = cr_session.get(calls_url(callrail), params={"start_date": "2025-01-01", "end_date": "2025-01-31"}).json()
    assert jan["total_records"] == 31  # one call per day, dates inclusive, account zone
    after = cr_session.get(calls_url(callrail), params={"start_date": "2025-04-10T00:00:00-05:00"}).json()
    assert after["total_records"] == 1
    assert cr_session.get(calls_url(callrail), params={"date_range": "bogus"}).status_code == 400


def test_callrail_relative_pagination(callrail, cr_session):
    callrail.seed("calls", 120, start=NOW - timedelta(days=20), end=NOW)
    got, url, params = [], calls_url(callrail), {"relative_pagination": "true", "per_page": 50}
    while url:
        data = cr_session.get(url, params=params).json()
        assert "total_records" not in data
        got += data["calls"]
        url, params = (data["next_page"], None) if data["has_next_page"] else (None, None)
    assert len({c["id"] for c in got}) == 120 and callrail.counters.ok == 3


def test_callrail_per_page_capped_at_250(callrail, cr_session):
    callrail.seed("companies", 300)
    data = cr_session.get(calls_url(callrail, "companies"), params={"per_page": 1000}).json()
    assert data["per_page"] == 250 and len(data["companies"]) == 250
    assert data["total_pages"] == 2 and data["total_records"] == 300


def test_callrail_fields_param_and_touch(callrail, cr_session):
    [call_id] = callrail.seed("calls", 1, start=NOW - timedelta(days=1), end=NOW)
    plain = cr_session.get(calls_url(callrail)).json()["calls"][0]
    assert "company_id" not in plain and "tags" not in plain and plain["id"] == call_id
    callrail.touch("calls", [call_id], tags=["vip"])
    rich = cr_session.get(calls_url(callrail), params={"fields": "company_id,tags,created_at"}).json()["calls"][0]
    assert rich["tags"] == ["vip"] and rich["company_id"].startswith("COM") and "created_at" in rich
    assert "updated_at" not in rich  # the real API gives no modification timestamp


@pytest.mark.parametrize("header", [None, 'Token token="nope"', "Bearer key"])
def test_callrail_401(callrail, header):
    headers = {"Authorization": header} if header else {}
    resp = requests.get(calls_url(callrail), headers=headers)
    assert resp.status_code == 401 and "error" in resp.json()
    assert callrail.counters.unauthorized == 1


def test_callrail_bare_token_header_and_unknown_account(callrail):
    ok = requests.get(calls_url(callrail, "trackers"), headers={"Authorization": "Token token=key"})
    assert ok.status_code == 200 and ok.json()["trackers"] == []
    missing = requests.get(f"{callrail.base_url}/v3/a/OTHER/calls.json", headers={"Authorization": "Token token=key"})
    assert missing.status_code == 404
