"""The HTTP source and the HubSpot / CallRail specs, over real loopback HTTP against the fakes in
tests/fakes (no mocking of requests), landing in real PostgreSQL and SQLite targets."""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncrunner.core.redact import redact
from syncrunner.core.templating import ENV
from syncrunner.dburl import create_engine
from syncrunner.runtime.engine import RunResult, run_spec
from syncrunner.runtime.strategy import RunOptions
from syncrunner.spec.load import check_spec, load_spec
from syncrunner.spec.model import Spec
from tests.fakes import FakeCallRail, FakeHubSpot
from tests.fakes.server import FakeAPI, Request, Response, route
from tests.helpers import history, rows

SPECS = Path(__file__).resolve().parent.parent / "specs"
TOKEN = "pat-na1-0f3c9e1d-secret-token"
API_KEY = "cr-key-77aa99bb-secret"
ACCOUNT = "ACC0000000000000000000000000000042"
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
NOW = dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.timezone.utc)
FAST_RETRIES = {"max_attempts": 8, "backoff": 0.01, "max_backoff": 0.05}


@pytest.fixture(params=["postgresql", "sqlite"])
def target(request) -> str:
    return request.getfixturevalue({"postgresql": "pg_url", "sqlite": "sqlite_url"}[request.param])


@pytest.fixture
def hubspot():
    with FakeHubSpot(token=TOKEN, search_rate_limit=None) as fake:
        yield fake


@pytest.fixture
def callrail():
    with FakeCallRail(api_key=API_KEY, account_id=ACCOUNT, now=NOW) as fake:
        yield fake


def hubspot_spec(fake: FakeHubSpot, entity: str = "contacts", token: str = TOKEN, **options) -> Spec:
    spec = load_spec(SPECS / "hubspot" / f"{entity}.yaml", {
        "HUBSPOT_BASE_URL": fake.base_url, "HUBSPOT_TOKEN": token,
        "HUBSPOT_SEARCH_REQUESTS_PER_SECOND": "1000"})
    spec.source.options.update(options)
    return spec


def callrail_spec(fake: FakeCallRail, entity: str = "calls", key: str = API_KEY, **options) -> Spec:
    spec = load_spec(SPECS / "callrail" / f"{entity}.yaml", {
        "CALLRAIL_BASE_URL": fake.base_url, "CALLRAIL_API_KEY": key, "CALLRAIL_ACCOUNT_ID": ACCOUNT,
        "CALLRAIL_REQUESTS_PER_SECOND": "1000"})
    spec.source.options.update(options)
    return spec


def run(spec: Spec, target: str, **opts) -> RunResult:
    return run_spec(spec, RunOptions(**opts), target)


def as_json(value) -> dict:
    return json.loads(value) if isinstance(value, str) else value


def metrics(target: str) -> dict:
    return as_json(history(target)[-1].performance_metrics)


def seed_contacts(fake: FakeHubSpot, n: int, group: int = 37) -> list[str]:
    """n contacts whose lastmodifieddate comes in runs of `group` equal values, so cap restarts and
    chunk boundaries fall in the middle of a run of ties."""
    ids = fake.seed("contacts", n, T0, step=dt.timedelta(seconds=1))
    for g in range(0, n, group):
        fake.touch("contacts", ids[g:g + group], when=T0 + dt.timedelta(minutes=g // group))
    return ids


def tables(target: str) -> set[str]:
    engine = create_engine(target)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def landed(target: str, table: str, key: str = "id") -> tuple[int, int]:
    (total, distinct), = rows(target, f"SELECT COUNT(*), COUNT(DISTINCT {key}) FROM {table}")
    return total, distinct


# -- HubSpot ---------------------------------------------------------------------------------------
def test_hubspot_25k_contacts_land_once_through_the_10k_cap(hubspot, target, capsys):
    seed_contacts(hubspot, 25_000)
    result = run(hubspot_spec(hubspot), target)
    assert result.status == "success", result.error
    assert landed(target, "hubspot_contacts") == (25_000, 25_000)
    assert result.stats.fetched == 25_000  # every record fetched once, none twice
    assert hubspot.count(status=400) == 0  # never paged into the cap
    m = metrics(target)
    assert m["api_calls"] == hubspot.counters.requests
    # every page is a fresh query from the last value read: none reaches the cap; each re-reads the
    # records of that value it already read (here up to 36 of a run of 37 ties), and the last one
    # is a short page
    assert "query_restarts" not in m and m["page_requeries"] == m["api_calls"] - 1
    assert math.ceil(25_000 / 200) <= m["api_calls"] <= math.ceil(25_000 / (200 - 36)) + 1
    (typed,), = rows(target, "SELECT COUNT(*) FROM hubspot_contacts WHERE lastmodifieddate IS NULL")
    assert typed == 0
    with capsys.disabled():
        print(f"\n  hubspot contacts 25k -> {target.split(':')[0]}: {m['records_per_second']:.0f} records/s, "
              f"{m['api_calls']} API calls, {m['api_calls_per_record']} calls/record")


def test_without_tie_break_more_ties_than_the_cap_fail_clearly(hubspot, sqlite_url):
    ids = hubspot.seed("contacts", 250, T0)
    hubspot.touch("contacts", ids, when=T0)
    spec = hubspot_spec(hubspot, max_results_per_query=100)
    del spec.source.options["tie_break"]
    result = run(spec, sqlite_url)
    assert result.status == "failed"
    assert "more than max_results_per_query=100 records share the cursor value" in result.error
    assert "tie_break" in result.error


def fail_then_resume(fake: FakeHubSpot, spec: Spec, target: str, **faults) -> tuple[RunResult, RunResult]:
    """A run that fails on the given faults (sets of pages or requests; not retried), then the rerun
    without them, which resumes from the failed run's checkpoint."""
    for name, value in faults.items():
        setattr(fake.faults, name, value)
    spec.source.options["retries"] = {"max_attempts": 1}  # a truncated page would be retried
    first = run(spec, target)
    del spec.source.options["retries"]
    for name in faults:
        setattr(fake.faults, name, set())
    fake.reset_log()
    second = run(spec, target)
    assert first.status == "failed" and second.status == "success", second.error
    assert "resuming failed run" in second.window.reason
    return first, second


def bulk_import(fake: FakeHubSpot, n: int, tied: int, first: int) -> tuple[list[str], dt.datetime]:
    """n contacts a second apart, then `tied` of them from index `first` on stamped with one
    lastmodifieddate millisecond by a bulk import, sorting between their neighbours."""
    ids = fake.seed("contacts", n, T0, step=dt.timedelta(seconds=1))
    stamp = T0 + dt.timedelta(seconds=first - 1, milliseconds=500)
    fake.touch("contacts", ids[first:first + tied], when=stamp)
    return ids, stamp


@pytest.mark.parametrize("tied,first", [(12_000, 6_000), (10_000, 0)], ids=["12000-mid", "10000-first"])
def test_bulk_import_sharing_one_millisecond_lands_once(hubspot, pg_url, capsys, tied, first):
    """More records than the 10,000 search cap (or exactly as many) share one lastmodifieddate: the
    tie_break request lists them by hs_object_id, then the search goes on past that millisecond."""
    ids, stamp = bulk_import(hubspot, 25_000, tied, first)
    result = run(hubspot_spec(hubspot), pg_url)
    assert result.status == "success", result.error
    assert landed(pg_url, "hubspot_contacts") == (25_000, 25_000)
    assert result.stats.fetched == 25_000 and result.stats.created == 25_000
    assert hubspot.count(status=400) == 0  # never paged into the cap, never sent a bad request
    m = metrics(pg_url)
    calls, pages = m["api_calls"], math.ceil(25_000 / 200)
    # the overhead: the page that finds the whole page tied re-reads the tied records read before
    # it, and the tie listing re-reads them (by id) once more; one short page ends the tie listing
    assert pages < calls <= pages + 4 and "query_restarts" not in m
    assert tied // 200 <= m["tie_break_queries"] <= tied // 200 + 2
    (at_stamp,), = rows(pg_url, "SELECT COUNT(*) FROM hubspot_contacts WHERE lastmodifieddate = %s"
                        % ("'" + stamp.strftime("%Y-%m-%d %H:%M:%S.%f") + "+00'"))
    assert at_stamp == tied
    with capsys.disabled():
        print(f"\n  hubspot 25k contacts, {tied:,} in one ms: {calls} API calls "
              f"(ceil(25000/200) = {pages}), {m['tie_break_queries']} of them tie_break")

    # incremental: 50 touched (some of them in the bulk import) -> exactly 50 updated
    later = T0 + dt.timedelta(days=30)
    touched = ids[first:first + 25] + ids[-25:]
    hubspot.touch("contacts", touched, when=later, firstname="Touched")
    second = run(hubspot_spec(hubspot), pg_url)
    assert second.status == "success", second.error
    assert (second.stats.created, second.stats.updated) == (0, 50)
    assert second.stats.fetched == 50 + second.stats.unchanged  # and the lookback's few re-reads
    assert second.stats.unchanged < 400
    (renamed,), = rows(pg_url, "SELECT COUNT(*) FROM hubspot_contacts WHERE firstname = 'Touched'")
    assert renamed == 50


@pytest.mark.parametrize("entity", ["companies", "deals"])
def test_companies_and_deals_tie_break_too(hubspot, sqlite_url, entity):
    """Their specs' tie_break requests (on hs_lastmodifieddate) work the same way: here with the cap
    lowered to 100 and 250 of 300 records in one millisecond."""
    ids = hubspot.seed(entity, 300, T0, step=dt.timedelta(seconds=1))
    hubspot.touch(entity, ids[20:270], when=T0 + dt.timedelta(seconds=19, milliseconds=250))
    result = run(hubspot_spec(hubspot, entity, max_results_per_query=100), sqlite_url)
    assert result.status == "success", result.error
    assert landed(sqlite_url, f"hubspot_{entity}") == (300, 300) and result.stats.fetched == 300
    assert metrics(sqlite_url)["tie_break_queries"] == 2  # pages of 200: the cap stops each query after one


def test_a_run_killed_inside_a_tie_resumes_there(hubspot, sqlite_url):
    """The checkpoint of a chunk read by the tie_break request says so; the rerun resumes the tie
    listing after the last key committed, then goes on past the tied value: none lost, none twice."""
    ids, _ = bulk_import(hubspot, 3_000, 1_500, 500)
    spec = hubspot_spec(hubspot, max_results_per_query=1_000)
    spec.source.chunk_size = 300
    # requests 1-3: the search (500 + 100 tied); 4: from the tied value, a whole page of it (200
    # tied); 5-10: the tie listing by id (200 skipped, 1,000 new: chunks end at 1,200 and 1,500);
    # 11 fails
    first, second = fail_then_resume(hubspot, spec, sqlite_url, malformed_requests={11})
    assert first.stats.fetched == 1_500 and second.stats.fetched == 1_500
    position = as_json(history(sqlite_url)[0].checkpoint)["position"]
    assert (position["tie"], position["after_key"]) == (True, ids[1_499])
    assert position["keys"] == []  # the 500 the capped search read at that value: passed by the listing
    assert landed(sqlite_url, "hubspot_contacts") == (3_000, 3_000)
    body = json.loads(hubspot.log[0].body)  # the rerun starts in the tie listing, after the last key
    assert body["sorts"] == [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]
    assert {"propertyName": "hs_object_id", "operator": "GT", "value": ids[1_499]} in body["filterGroups"][0]["filters"]
    assert body["limit"] == 200 and "email" in body["properties"]  # the request's own keys stay
    searches = [json.loads(r.body)["filterGroups"][0]["filters"][0] for r in hubspot.log]
    after_tie = [f["operator"] for f in searches if f["propertyName"] == "lastmodifieddate"
                 and f["operator"] != "EQ"]  # past the tied value, then from each page's last value
    assert after_tie[0] == "GT" and set(after_tie[1:]) == {"GTE"}


@pytest.mark.parametrize("tied", [0, 1_000], ids=["distinct-ms", "bulk-import-tie"])
def test_records_modified_between_pages_all_land_once_with_their_latest_values(hubspot, sqlite_url, tied):
    """Search pages by offset: a record modified during the run moves to the end of the results and
    every later one shifts a place earlier, so following `after` skips the record at the next page
    boundary. Each page is a fresh query from the last value read instead (in a tie: from the last
    id), so nothing is skipped and a moved record is read again at its new place."""
    ids, _ = bulk_import(hubspot, 2_000, tied, 300) if tied else (
        hubspot.seed("contacts", 2_000, T0, step=dt.timedelta(seconds=1)), None)
    later = T0 + dt.timedelta(days=1)
    # before search n, modify records read already (pages 1, 2, 4 and, with the tie, 3: inside the
    # tie) and one not read yet, each to a new lastmodifieddate after every other record's
    moves = {2: [ids[10]], 3: [ids[250], ids[399]], 5: [ids[700], ids[1_900]], 8: [ids[350]]}

    def modify(otype: str, n: int) -> None:
        for k, rid in enumerate(moves.get(n, [])):
            hubspot.touch(otype, [rid], when=later + dt.timedelta(minutes=n, seconds=k), firstname=f"Moved{n}")
    hubspot.search_hook = modify
    result = run(hubspot_spec(hubspot), sqlite_url)
    hubspot.search_hook = None
    assert result.status == "success", result.error
    assert landed(sqlite_url, "hubspot_contacts") == (2_000, 2_000)
    want = {int(r.id): (r.properties["firstname"], r.properties["lastmodifieddate"][:23])
            for r in hubspot.records("contacts")}
    got = {i: (name, str(mod).replace(" ", "T")[:23]) for i, name, mod in
           rows(sqlite_url, "SELECT id, firstname, lastmodifieddate FROM hubspot_contacts")}
    assert got == want
    moved = sum(len(v) for v in moves.values())
    assert sum(1 for name, _ in got.values() if name.startswith("Moved")) == moved
    assert 2_000 <= result.stats.fetched <= 2_000 + moved  # the moved ones read again at the end


TIE_SPEC = """\
crm: test
entity: items
source:
  kind: http
  base_url: http://127.0.0.1:9
  request:
    method: POST
    path: /search
    json: {json}
  records: results
  pagination: {{type: cursor, next: next}}
  cursor: updated
  key: id
  sorted_by_cursor: true
  max_results_per_query: 100
  tie_break:
    json: {tie}
target: {{table: items, key: [id]}}
fields:
  id: {{type: integer, required: true}}
  updated: {{type: datetime}}
"""
GOOD_REQUEST = """'{"since": "{{ since | iso }}", "op": "{{ "gt" if since_exclusive else "gte" }}"}'"""
GOOD_TIE = """'{"at": "{{ tie_value | epoch_ms }}", "after": "{{ after_key }}", "sort": "id"}'"""


@pytest.mark.parametrize("request_json,tie_json,key,line,message", [
    ("{since: '{{ since | iso }}'}", GOOD_TIE, "source.request", 6, "must use since_exclusive"),
    (GOOD_REQUEST, "{sort: id, after: '{{ after_key }}'}", "source.tie_break", 16, "must use tie_value"),
    (GOOD_REQUEST, "{sort: id, at: '{{ tie_value }}'}", "source.tie_break", 16, "must use after_key"),
    (GOOD_REQUEST, """'[{{ tie_value | epoch_ms }}, "{{ after_key }}"]'""", "source.tie_break.json", 17,
     "must render to a JSON object"),
    (GOOD_REQUEST, """'{"at": {{ tie_value | epoch_ms }}, {{ after_key }}}'""", "source.tie_break", 16,
     "does not render"),
    (GOOD_REQUEST, "'{{ tie_value | epoch_ms }'", "source.tie_break.json", 17, "does not compile"),
])
def test_lint_checks_the_tie_break_before_any_run(tmp_path, request_json, tie_json, key, line, message):
    """A tie_break is sent only when a query reaches its cap, maybe hours into a run: lint renders it."""
    (tmp_path / "ok.yaml").write_text(TIE_SPEC.format(json=GOOD_REQUEST, tie=GOOD_TIE))
    assert [p for p in check_spec(tmp_path / "ok.yaml")[1] if p.severity == "error"] == []
    (tmp_path / "s.yaml").write_text(TIE_SPEC.format(json=request_json, tie=tie_json))
    spec, problems = check_spec(tmp_path / "s.yaml")
    assert spec is None
    assert [(p.key, p.line) for p in problems if message in p.message] == [(key, line)], problems


def test_tie_break_needs_a_result_cap(tmp_path):
    (tmp_path / "s.yaml").write_text(TIE_SPEC.format(json=GOOD_REQUEST, tie=GOOD_TIE).replace(
        "  max_results_per_query: 100\n", ""))
    spec, problems = check_spec(tmp_path / "s.yaml")
    assert spec is None and any("max_results_per_query" in p.message for p in problems), problems


def test_a_sorted_request_without_since_cannot_start_a_page_from_a_value(tmp_path):
    (tmp_path / "s.yaml").write_text(TIE_SPEC.format(
        json="""'{"op": "{{ "gt" if since_exclusive else "gte" }}"}'""", tie=GOOD_TIE))
    spec, problems = check_spec(tmp_path / "s.yaml")
    assert spec is None
    assert [(p.key, p.line) for p in problems if "must use since" in p.message] == [("source.request", 6)]
    (tmp_path / "s.yaml").write_text(TIE_SPEC.format(json=GOOD_REQUEST, tie=GOOD_TIE).replace(
        "  sorted_by_cursor: true\n", "  next_page: from_cursor\n"))
    spec, problems = check_spec(tmp_path / "s.yaml")
    assert spec is None and any("sorted_by_cursor" in p.message for p in problems), problems


def test_next_page_pagination_follows_the_api_pages_and_restarts_at_the_cap(hubspot, sqlite_url):
    """The opt-in for APIs where a query costs much more than a page: one query per cap, paged by
    the API's `after` (fewer records re-read, but exposed to the shift a modification causes)."""
    seed_contacts(hubspot, 3_000)
    result = run(hubspot_spec(hubspot, next_page="pagination", max_results_per_query=1_000), sqlite_url)
    assert result.status == "success", result.error
    assert landed(sqlite_url, "hubspot_contacts") == (3_000, 3_000) and result.stats.fetched == 3_000
    m = metrics(sqlite_url)
    assert m["query_restarts"] == 2 and "page_requeries" not in m
    assert m["tie_break_queries"] == 2 and m["api_calls"] == 17  # at each cap: the last value by id
    # every page but the first of the 3 searches and the 2 tie listings follows `after`
    assert sum(1 for r in hubspot.log if "after" in json.loads(r.body)) == 17 - 5


def retry_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "syncrunner.http" and r.levelno == logging.WARNING]


def test_hubspot_faults_same_data_and_retries_counted(hubspot, target, caplog):
    caplog.set_level(logging.INFO)
    seed_contacts(hubspot, 3_000)
    hubspot.faults.seed, hubspot.faults.error_rate, hubspot.faults.drop_rate = 3, 0.15, 0.08
    result = run(hubspot_spec(hubspot, retries=FAST_RETRIES), target)
    assert result.status == "success", result.error
    c = hubspot.counters
    assert c.injected_errors > 0 and c.dropped > 0
    m = metrics(target)
    assert m["retries"] == c.injected_errors + c.dropped
    # routine retries: one WARNING line per distinct cause, with its count, not one per retry
    causes = m["retry_causes"]
    assert sum(causes.values()) == m["retries"] and len(causes) >= 3
    assert sorted(retry_warnings(caplog)) == sorted(
        f"hubspot.contacts: retried {n} time{'' if n == 1 else 's'}: {cause}" for cause, n in causes.items())
    got = rows(target, "SELECT id, email, lastmodifieddate FROM hubspot_contacts ORDER BY id")
    want = sorted((int(r.id), r.properties["email"]) for r in hubspot.records("contacts"))
    assert [(r[0], r[1]) for r in got] == want


def test_hubspot_429_bursts_honour_retry_after(hubspot, sqlite_url, caplog):
    caplog.set_level(logging.DEBUG)
    seed_contacts(hubspot, 2_400)
    hubspot.search_rate_limit = 4  # HubSpot's search limit, 429 + Retry-After past it
    started = time.monotonic()
    result = run(hubspot_spec(hubspot), sqlite_url)  # client budget 1000/s: it will be throttled
    assert result.status == "success", result.error
    assert landed(sqlite_url, "hubspot_contacts") == (2_400, 2_400)
    m = metrics(sqlite_url)
    n = hubspot.counters.throttled
    assert n > 0 and m["throttled"] == n == m["retries"]
    assert time.monotonic() - started >= 1.0  # waited the Retry-After second
    assert retry_warnings(caplog) == [f"hubspot.contacts: retried {n} time{'' if n == 1 else 's'}: "
                                      f"HTTP 429 (rate limit)"]


def test_client_rate_limit_keeps_under_the_api_limit(hubspot, sqlite_url):
    seed_contacts(hubspot, 2_000)  # 10 pages: sent at least 9/4 s apart from first to last
    hubspot.search_rate_limit = 10
    spec = hubspot_spec(hubspot, rate_limit={"per_second": 4})
    result = run(spec, sqlite_url)
    assert result.status == "success", result.error
    assert hubspot.counters.throttled == 0
    # seen by the server (answer times), so a slow machine cannot pass the budget off as waits;
    # unlimited, the ten pages take about 0.2 s here
    times = [e.at for e in hubspot.log]
    assert len(times) >= 10 and times[-1] - times[0] > 1.5


def test_wrong_token_fails_fast_clearly_and_writes_nothing(hubspot, target, caplog):
    caplog.set_level(logging.DEBUG)
    seed_contacts(hubspot, 500)
    wrong = "pat-na1-wrong-token-0000"
    started = time.monotonic()
    result = run(hubspot_spec(hubspot, token=wrong), target)
    assert time.monotonic() - started < 3
    assert result.status == "failed"
    assert "HTTP 401" in result.error and "bearer token (from ${HUBSPOT_TOKEN})" in result.error
    assert "page 1 of POST " in result.error and "not retried" in result.error
    assert hubspot.counters.requests == 1
    assert "hubspot_contacts" not in tables(target)  # the source failed before the table was created
    (h,) = history(target)
    assert h.status == "failed" and "HTTP 401" in h.error_message
    for text in (result.error, h.error_message, json.dumps(as_json(h.configuration)), caplog.text):
        assert wrong not in text and TOKEN not in text


def test_truncated_json_page_is_retried_then_lands_everything(hubspot, sqlite_url, caplog):
    """A 200 cut off mid-JSON is a transient fault: retried like a 5xx, counted, nothing lost."""
    seed_contacts(hubspot, 1_000)
    hubspot.faults.malformed_requests = {4, 5, 6}  # the 4th request's page, cut off three times
    caplog.set_level(logging.INFO)
    result = run(hubspot_spec(hubspot, retries=FAST_RETRIES), sqlite_url)
    assert result.status == "success", result.error
    assert landed(sqlite_url, "hubspot_contacts") == (1_000, 1_000)
    assert hubspot.counters.malformed == 3
    m = metrics(sqlite_url)
    assert m["retries"] == 3 and m["retry_causes"] == {"response not valid JSON": 3}
    assert "hubspot.contacts: retried 3 times: response not valid JSON" in caplog.text


def test_always_truncated_json_fails_after_max_attempts_naming_url_and_page(hubspot, sqlite_url, caplog):
    seed_contacts(hubspot, 1_000)
    hubspot.faults.malformed_pages = {1}  # every request: each page is a fresh query (after absent)
    result = run(hubspot_spec(hubspot, retries={"max_attempts": 3, "backoff": 0.01}), sqlite_url)
    assert result.status == "failed"
    assert hubspot.counters.malformed == 3
    # the base URL came from ${HUBSPOT_BASE_URL}: only a password inside a URL variable is secret
    assert (f"page 1 of POST {hubspot.base_url}/crm/v3/objects/contacts/search still failing after 3 "
            "attempts; last error response not valid JSON: ") in result.error
    assert "\n" not in result.error and TOKEN not in result.error + caplog.text
    (h,) = history(sqlite_url)
    assert h.status == "failed" and TOKEN not in h.error_message


def test_missing_records_path_names_url_and_page(callrail, sqlite_url):
    callrail.seed("users", 5)
    result = run(callrail_spec(callrail, "users", records="people"), sqlite_url)
    assert result.status == "failed"
    assert f"page 1 of GET {callrail.base_url}/v3/a/{ACCOUNT}/users.json?per_page=250&page=1" in result.error
    assert "no records at 'people'" in result.error and "users" in result.error


def test_incremental_fetches_only_records_modified_since(hubspot, target):
    ids = seed_contacts(hubspot, 2_000)
    first = run(hubspot_spec(hubspot), target)
    assert first.status == "success" and first.stats.fetched == 2_000
    later = T0 + dt.timedelta(days=30)
    changed = ids[100:250] + ids[1500:1530]
    hubspot.touch("contacts", changed, when=later, firstname="Renamed")
    new = hubspot.seed("contacts", 20, later + dt.timedelta(minutes=1))
    hubspot.reset_log()
    second = run(hubspot_spec(hubspot), target)
    assert second.status == "success", second.error
    assert (second.stats.created, second.stats.updated) == (20, len(changed))
    # besides those, only the unchanged records inside the spec's 5-minute lookback are re-read
    since = dt.datetime.fromisoformat(first.watermark) - dt.timedelta(minutes=5)
    in_lookback = [r for r in hubspot.records("contacts") if since <= r.updated_at < later]
    assert second.stats.unchanged == len(in_lookback) == 5 * 37 + 2
    assert second.stats.fetched == len(changed) + len(new) + len(in_lookback)
    body = json.loads(hubspot.log[0].body)
    (flt,) = body["filterGroups"][0]["filters"]
    assert flt["operator"] == "GTE" and flt["propertyName"] == "lastmodifieddate"
    (renamed,), = rows(target, "SELECT COUNT(*) FROM hubspot_contacts WHERE firstname = 'Renamed'")
    assert renamed == len(changed)


def test_failed_run_resumes_from_its_checkpoint(hubspot, sqlite_url):
    seed_contacts(hubspot, 3_000)
    spec = hubspot_spec(hubspot)
    spec.source.chunk_size = 500
    # request 10 fails: 9 pages of 200 (each fresh query re-reads up to 36 records of the last
    # value of the page before) read 1,500-1,800 records; chunks of 500 are committed up to 1,500
    first, second = fail_then_resume(hubspot, spec, sqlite_url, malformed_requests={10})
    assert first.stats.fetched == 1_500
    assert second.stats.fetched == 1_500  # only the rest, none twice
    assert landed(sqlite_url, "hubspot_contacts") == (3_000, 3_000)
    assert json.loads(hubspot.log[0].body)["filterGroups"][0]["filters"][0]["operator"] == "GTE"


@pytest.mark.parametrize("entity,props", [("companies", "hs_lastmodifieddate"), ("deals", "hs_lastmodifieddate")])
def test_hubspot_companies_and_deals_typed(hubspot, sqlite_url, entity, props):
    hubspot.seed(entity, 300, T0)
    result = run(hubspot_spec(hubspot, entity), sqlite_url)
    assert result.status == "success", result.error
    assert landed(sqlite_url, f"hubspot_{entity}") == (300, 300)
    body = json.loads(hubspot.log[0].body)
    assert body["sorts"] == [{"propertyName": props, "direction": "ASCENDING"}]
    col = "numberofemployees" if entity == "companies" else "amount"
    (n,), = rows(sqlite_url, f"SELECT COUNT(*) FROM hubspot_{entity} WHERE {col} > 0")
    assert n == 300


# -- CallRail --------------------------------------------------------------------------------------
def test_callrail_full_run_gets_every_call_not_just_30_days(callrail, target, capsys):
    callrail.seed("trackers", 3)
    ids = callrail.seed("calls", 5_000)  # two years of calls
    result = run(callrail_spec(callrail), target)
    assert result.status == "success", result.error
    assert landed(target, "callrail_calls") == (5_000, 5_000)
    first = callrail.log[0].query
    assert first["date_range"] == ["all_time"] and first["relative_pagination"] == ["true"]
    m = metrics(target)
    with capsys.disabled():
        print(f"\n  callrail calls 5k -> {target.split(':')[0]}: {m['records_per_second']:.0f} records/s, "
              f"{m['api_calls']} API calls, {m['api_calls_per_record']} calls/record")
    (tags,), = rows(target, f"SELECT tags FROM callrail_calls WHERE id = '{ids[0]}'")
    assert isinstance(json.loads(tags) if isinstance(tags, str) else tags, list)

    # delta: re-reads the lookback week by start_date, not the whole history
    callrail.reset_log()
    second = run(callrail_spec(callrail), target)
    assert second.status == "success", second.error
    q = callrail.log[0].query
    assert "start_date" in q and "date_range" not in q
    assert 0 < second.stats.fetched < 100


@pytest.mark.parametrize("entity", ["companies", "trackers", "users"])
def test_callrail_page_paginated_lists(callrail, sqlite_url, entity):
    callrail.seed(entity, 260 if entity != "companies" else 520)
    result = run(callrail_spec(callrail, entity, request={
        **callrail_spec(callrail, entity).source.options["request"], "params": {"per_page": 100}}), sqlite_url)
    assert result.status == "success", result.error
    n = len(callrail.records(entity))
    assert landed(sqlite_url, f"callrail_{entity}") == (n, n)
    assert [e.query["page"] for e in callrail.log] == [[str(p)] for p in range(1, (n + 99) // 100 + 1)]


def test_secrets_never_in_history_errors_or_logs(callrail, hubspot, sqlite_url, caplog):
    caplog.set_level(logging.DEBUG)
    callrail.seed("calls", 300)
    hubspot.seed("contacts", 50, T0)
    assert run(callrail_spec(callrail), sqlite_url).status == "success"
    assert run(hubspot_spec(hubspot), sqlite_url).status == "success"
    bad = run(callrail_spec(callrail, "users", key="not-the-key-123456"), sqlite_url)
    assert bad.status == "failed" and "Authorization header (from ${CALLRAIL_API_KEY})" in bad.error
    assert redact(f"x {API_KEY} {TOKEN} not-the-key-123456") == "x *** *** ***"
    texts = [bad.error, caplog.text] + [f"{h.configuration} {h.error_message} {h.performance_metrics}"
                                        for h in history(sqlite_url)]
    for text in texts:
        for secret in (API_KEY, TOKEN, "not-the-key-123456"):
            assert secret not in text


# -- generic styles against a tiny API: offset, link_header, query and basic auth -------------------
class ListAPI(FakeAPI):
    """120 items behind offset (`/offset?offset=&limit=`) and Link-header (`/linked?p=`) listings."""

    items = [{"id": i, "updated": f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}Z"} for i in range(1, 121)]

    def routes(self):
        return [route("GET", "/offset", self._offset), route("GET", "/linked", self._linked)]

    def is_authorized(self, req: Request) -> bool:
        return req.arg("api_key") == "qkey-123456" or req.headers.get("authorization") == "Basic dTpwd2QxMjM0NTY="

    def _offset(self, req: Request) -> Response:
        off, lim = int(req.arg("offset")), int(req.arg("limit"))
        return Response(200, {"data": {"items": self.items[off:off + lim]}, "total": len(self.items)})

    def _linked(self, req: Request) -> Response:
        p = int(req.arg("p") or 0)
        headers = {"Link": f'<{req.base_url}/linked?p={p + 1}>; rel="next"'} if (p + 1) * 50 < 120 else {}
        return Response(200, self.items[p * 50:(p + 1) * 50], headers)


LIST_SPEC = """\
crm: test
entity: items
source:
  kind: http
  base_url: {base}
  auth: {auth}
  request: {request}
  records: {records}
  pagination: {pagination}
  cursor: updated
  key: id
target: {{table: items, key: [id]}}
fields:
  id: {{type: integer, required: true}}
  updated: {{type: datetime}}
"""


def offset_list_spec(folder: Path, base: str, key_var: str = "API_KEY", more: str = "") -> Path:
    """ListAPI's offset listing as `folder`/s.yaml, the API key from ${key_var}; `more`: more
    pagination keys."""
    (folder / "s.yaml").write_text(LIST_SPEC.format(
        base=base, auth=f"{{type: query, param: api_key, value: '${{{key_var}}}'}}",
        request="{path: /offset, params: {limit: 25}}", records="data.items",
        pagination=f"{{type: offset, param: offset, total: total{more}}}"))
    return folder / "s.yaml"


@pytest.mark.parametrize("style", ["offset", "link_header"])
def test_offset_and_link_header_pagination_with_query_and_basic_auth(tmp_path, sqlite_url, style):
    with ListAPI() as api:
        text = LIST_SPEC.format(base=api.base_url, **({
            "offset": dict(auth="{type: query, param: api_key, value: '${API_KEY}'}",
                           request="{path: /offset, params: {limit: 25}}", records="data.items",
                           pagination="{type: offset, param: offset, total: total}"),
            "link_header": dict(auth="{type: basic, username: u, password: '${API_PASSWORD}'}",
                                request="{path: /linked}", records="'@'", pagination="{type: link_header}"),
        }[style]))
        (tmp_path / "s.yaml").write_text(text)
        spec = load_spec(tmp_path / "s.yaml", {"API_KEY": "qkey-123456", "API_PASSWORD": "pwd123456"})
        result = run(spec, sqlite_url)
        assert result.status == "success", result.error
        assert landed(sqlite_url, "items") == (120, 120)
        assert api.counters.requests == (5 if style == "offset" else 3)
        # --start-date: the window is also applied client-side on the cursor
        since = run(spec, sqlite_url, start_date="2025-01-01T00:01:30")
        assert since.stats.fetched == 120 - 89


def test_template_filters_for_window_values():
    since = dt.datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)
    assert ENV.from_string("{{ s | epoch_ms }}").render(s=since) == "1735787045678"
    assert ENV.from_string("{{ s | epoch_s }}").render(s=since) == "1735787045"
    assert ENV.from_string("{{ s | iso }}").render(s=since) == "2025-01-02T03:04:05.678000+00:00"
    assert ENV.from_string("{{ s | epoch_ms }}").render(s=None) == "None"
    # RFC 7231 IMF-fixdate, whole seconds, in GMT whatever the offset; naive = UTC; a date = midnight
    assert ENV.from_string("{{ s | http_date }}").render(s=since) == "Thu, 02 Jan 2025 03:04:05 GMT"
    cet = dt.timezone(dt.timedelta(hours=1))
    assert ENV.from_string("{{ s | http_date }}").render(s=since.astimezone(cet)) == "Thu, 02 Jan 2025 03:04:05 GMT"
    assert ENV.from_string("{{ s | http_date }}").render(s=dt.datetime(2025, 7, 4, 9)) == "Fri, 04 Jul 2025 09:00:00 GMT"
    assert ENV.from_string("{{ s | http_date }}").render(s=dt.date(2025, 7, 4)) == "Fri, 04 Jul 2025 00:00:00 GMT"


# -- whole CRM folders through the CLI ---------------------------------------------------------------
@pytest.mark.parametrize("crm", ["hubspot", "callrail"])
def test_cli_runs_a_whole_crm_folder_against_the_fake(crm, hubspot, callrail, pg_url):
    """`syncrunner run specs/<crm>/ --target postgresql://...` brings every record of every entity."""
    from click.testing import CliRunner

    from syncrunner.cli import EXIT_OK, main

    if crm == "hubspot":
        counts = {"contacts": 2_500, "companies": 400, "deals": 700}
        for entity, n in counts.items():
            hubspot.seed(entity, n, T0)
        env = {"HUBSPOT_BASE_URL": hubspot.base_url, "HUBSPOT_TOKEN": TOKEN,
               "HUBSPOT_SEARCH_REQUESTS_PER_SECOND": "1000"}
    else:
        counts = {"calls": 1_200, "companies": 4, "trackers": 9, "users": 6}
        for entity, n in counts.items():
            callrail.seed(entity, n)
        env = {"CALLRAIL_BASE_URL": callrail.base_url, "CALLRAIL_API_KEY": API_KEY,
               "CALLRAIL_ACCOUNT_ID": ACCOUNT, "CALLRAIL_REQUESTS_PER_SECOND": "1000"}
    fake = hubspot if crm == "hubspot" else callrail
    res = CliRunner().invoke(main, ["run", str(SPECS / crm), "--target", pg_url, "--no-progress"], env=env)
    assert res.exit_code == EXIT_OK, res.output
    for entity, n in counts.items():
        upstream = len(fake.records(entity))  # seeding calls may add the company they belong to
        assert upstream >= n
        assert landed(pg_url, f"{crm}_{entity}") == (upstream, upstream), entity
    assert {h.status for h in history(pg_url)} == {"success"} and len(history(pg_url)) == len(counts)


def test_hubspot_archived_records_are_soft_deleted_by_a_full_run(hubspot, pg_url, caplog):
    """Search never returns archived records; the specs' delete sweep marks them on a full run."""
    ids = hubspot.seed("contacts", 300, T0)
    first = run(hubspot_spec(hubspot), pg_url)
    assert first.status == "success"
    hubspot.archive("contacts", ids[:12])
    caplog.set_level(logging.INFO)
    delta = run(hubspot_spec(hubspot), pg_url)  # incremental: never deletes
    assert rows(pg_url, "SELECT COUNT(*) FROM hubspot_contacts WHERE deleted_at IS NOT NULL")[0][0] == 0
    assert any("not swept" in n for n in delta.notes)
    swept = [r for r in caplog.records if "deletes not swept: windowed run" in r.getMessage()]
    assert [r.levelno for r in swept] == [logging.INFO]  # every incremental run: routine, no warning
    full = run(hubspot_spec(hubspot), pg_url, full=True)
    assert full.status == "success"
    gone = {r[0] for r in rows(pg_url, "SELECT id FROM hubspot_contacts WHERE deleted_at IS NOT NULL")}
    assert gone == {int(i) for i in ids[:12]}
    assert landed(pg_url, "hubspot_contacts") == (300, 300)


def test_hubspot_total_gives_progress_a_count(hubspot, sqlite_url):
    """`total: total` in the spec: with progress on, one extra request reads the API's own count."""
    from syncrunner.runtime.engine import SyncRun

    seed_contacts(hubspot, 1_234)
    seen = {}

    class Totals:
        def started(self, spec, window, total): seen["total"] = total
        def chunk_done(self, *a): pass
        def finished(self, *a): pass

    result = SyncRun(hubspot_spec(hubspot), RunOptions(), sqlite_url, observers=[Totals()], count_total=True).run()
    assert result.status == "success" and result.stats.fetched == 1_234
    assert seen["total"] == 1_234
    assert metrics(sqlite_url)["api_calls"] == 7 + 1  # 7 pages of up to 200, plus the count
