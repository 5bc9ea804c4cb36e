"""SalesRabbit end to end: `syncrunner run specs/salesrabbit/` through the CLI into PostgreSQL against
the fake (tests/fakes/salesrabbit.py) over real loopback HTTP. Users, leads (delta by the
If-Modified-Since header) and lead status histories (an object keyed by lead id)."""
from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncrunner.cli import EXIT_FAILED, EXIT_OK, main
from syncrunner.runtime.engine import RunResult, run_spec
from syncrunner.runtime.strategy import RunOptions
from syncrunner.spec.load import load_spec
from syncrunner.spec.model import Spec
from tests.fakes import FakeSalesRabbit
from tests.fakes.restkit import utc
from tests.helpers import history, rows

SPECS = Path(__file__).resolve().parent.parent / "specs" / "salesrabbit"
TOKEN = "sr-3f9a0c7e51d2b8a4-secret-token"
T0 = utc(2025, 3, 1, 8)
FAST_RETRIES = {"max_attempts": 8, "backoff": 0.01, "max_backoff": 0.05}
TABLES = {"users": "salesrabbit_users", "leads": "salesrabbit_leads",
          "lead_status_histories": "salesrabbit_lead_status_histories"}


@pytest.fixture
def rabbit():
    with FakeSalesRabbit(token=TOKEN) as fake:
        fake.faults.retry_after_seconds = 0
        fake.seed(users=7, leads=5_000, start=T0)
        # a bulk reassignment stamps one second on 300 leads: ties across a page boundary
        fake.touch(range(14001, 14301), T0 + dt.timedelta(days=20), status="Not Home")
        yield fake


def env(fake: FakeSalesRabbit, token: str = TOKEN) -> dict:
    return {"SALESRABBIT_BASE_URL": fake.base_url, "SALESRABBIT_TOKEN": token,
            "SALESRABBIT_REQUESTS_PER_SECOND": "1000"}


def cli(fake: FakeSalesRabbit, target: str, *args: str, token: str = TOKEN):
    return CliRunner().invoke(main, ["run", str(SPECS), "--target", target, "--no-progress", *args],
                              env=env(fake, token))


def spec(fake: FakeSalesRabbit, entity: str = "leads", per_page: int = 2000, **options) -> Spec:
    s = load_spec(SPECS / f"{entity}.yaml", env(fake))
    s.source.options["request"]["params"]["perPage"] = per_page
    s.source.options.update(options)
    return s


def run(s: Spec, target: str, **opts) -> RunResult:
    return run_spec(s, RunOptions(**opts), target)


def upstream_histories(fake: FakeSalesRabbit) -> set[tuple]:
    return {(lid, h["_updated"].replace(microsecond=0), h["id"]) for lid, hs in fake.history.items() for h in hs}


def landed_histories(target: str) -> list[tuple]:
    return [(lid, as_utc(at), sid) for lid, at, sid in rows(
        target, "SELECT lead_id, status_updated, status_id FROM salesrabbit_lead_status_histories "
                "WHERE deleted_at IS NULL")]


def as_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def assert_mirrors(fake: FakeSalesRabbit, target: str) -> None:
    """Every record of every entity landed exactly once, with the fake's values."""
    assert sorted(r for r, in rows(target, "SELECT id FROM salesrabbit_users")) == sorted(fake.users)
    leads = rows(target, "SELECT id, status, date_modified FROM salesrabbit_leads WHERE deleted_at IS NULL")
    assert len(leads) == len({r[0] for r in leads}) == len(fake.leads)
    assert {r[0]: (r[1], as_utc(r[2])) for r in leads} == {
        i: (lead["status"], lead["_modified"]) for i, lead in fake.leads.items()}
    got = landed_histories(target)
    assert len(got) == len(set(got)) and set(got) == upstream_histories(fake)


def test_folder_run_lands_every_record_once_then_a_delta_run_updates_exactly_the_changed(rabbit, pg_url):
    first = cli(rabbit, pg_url)
    assert first.exit_code == EXIT_OK, first.output
    assert_mirrors(rabbit, pg_url)
    runs = {h.sync_type: h for h in history(pg_url)}
    assert set(runs) == set(TABLES) and {h.status for h in runs.values()} == {"success"}
    assert runs["leads"].records_created == 5_000

    changed = [13007, 13500, 14250, 15000]  # 14250 is one of the 300 tied leads
    rabbit.touch(changed[:2], T0 + dt.timedelta(days=40), status="Dead")
    rabbit.touch(changed[2:], T0 + dt.timedelta(days=40), notes="call back")
    before = len(rows(pg_url, "SELECT 1 FROM salesrabbit_lead_status_histories WHERE lead_id IN (13007, 13500, "
                              "14250, 15000)"))
    rabbit.reset_log()
    second = cli(rabbit, pg_url)
    assert second.exit_code == EXIT_OK, second.output
    assert_mirrors(rabbit, pg_url)
    delta = {h.sync_type: h for h in history(pg_url)[3:]}
    # the header narrowed the fetch to the leads modified since the watermark (the 300 tied leads'
    # second) minus the 5-minute lookback: those 300 again (unchanged, no write) and the changed
    since = T0 + dt.timedelta(days=20) - dt.timedelta(minutes=5)
    in_window = {i for i, lead in rabbit.leads.items() if lead["_modified"] >= since}
    assert len(in_window) == 303
    assert (delta["leads"].records_processed, delta["leads"].records_updated, delta["leads"].records_created) == (303, 4, 0)
    assert delta["lead_status_histories"].records_created == 2  # the two new "Dead" entries
    # a history row carries its lead's dateModified: the changed leads' older rows are updated
    assert delta["lead_status_histories"].records_updated == before
    assert rows(pg_url, "SELECT notes FROM salesrabbit_leads WHERE id = 15000") == [("call back",)]
    assert delta["users"].records_updated == 0 and delta["users"].records_created == 0
    assert rabbit.count(path_contains="/leads") <= 2


def test_a_full_run_marks_leads_deleted_upstream(rabbit, pg_url):
    assert cli(rabbit, pg_url).exit_code == EXIT_OK
    rabbit.delete([13002, 13003, 14100])
    assert cli(rabbit, pg_url).exit_code == EXIT_OK  # incremental: never deletes
    assert rows(pg_url, "SELECT COUNT(*) FROM salesrabbit_leads WHERE deleted_at IS NOT NULL") == [(0,)]
    full = cli(rabbit, pg_url, "--full")
    assert full.exit_code == EXIT_OK, full.output
    assert rows(pg_url, "SELECT id FROM salesrabbit_leads WHERE deleted_at IS NOT NULL ORDER BY id") == [
        (13002,), (13003,), (14100,)]
    assert rows(pg_url, "SELECT DISTINCT lead_id FROM salesrabbit_lead_status_histories "
                        "WHERE deleted_at IS NOT NULL ORDER BY lead_id") == [(13002,), (13003,), (14100,)]
    assert_mirrors(rabbit, pg_url)


def test_leads_created_changed_and_deleted_mid_walk_land_once(rabbit, pg_url):
    """Offset pages of live data shift when a lead appears, moves or vanishes between two pages; each
    page here is a fresh query from the last dateModified read, so none is skipped or doubled."""
    calls = {"n": 0}

    def mid_walk(entity: str, page: int) -> None:
        if entity != "leads":
            return
        calls["n"] += 1
        if calls["n"] == 3:
            late = T0 + dt.timedelta(days=60)
            rabbit.add_lead(late)                            # created: sorts last
            rabbit.touch([13010], late, status="Dead")       # already read: moves to the end
            rabbit.delete([14500, 14501])                    # not read yet: would shift the pages
    rabbit.page_hook = mid_walk
    result = run(spec(rabbit, per_page=500), pg_url)
    assert result.status == "success", result.error
    got = rows(pg_url, "SELECT id, status FROM salesrabbit_leads")
    assert len(got) == len({i for i, _ in got}) == 5_000 + 1 - 2
    assert {i for i, _ in got} == set(rabbit.leads) and dict(got)[13010] == "Dead"
    assert calls["n"] > 10


def test_bad_token_fails_clearly_without_printing_it(rabbit, pg_url, caplog):
    wrong = "sr-wrong-0000000000-secret"
    res = cli(rabbit, pg_url, token=wrong)
    assert res.exit_code == EXIT_FAILED
    assert "HTTP 401" in res.output and "refused the bearer token" in res.output
    assert '{"message": "Unauthorized"}' in res.output
    for h in history(pg_url):
        assert h.status == "failed" and wrong not in f"{h.error_message} {h.configuration}"
    assert wrong not in res.output + caplog.text and TOKEN not in res.output + caplog.text
    assert rabbit.count(status=401) == len(TABLES)  # one refused call each, not retried


def test_429_and_5xx_storms_are_retried_and_nothing_is_lost(rabbit, pg_url, caplog):
    caplog.set_level(logging.INFO)
    rabbit.inject(429, count=4, path_contains="/leads")  # the first page: 7 failures, then served
    rabbit.inject(503, count=3, path_contains="/leads")
    result = run(spec(rabbit, per_page=1000, retries=FAST_RETRIES), pg_url)
    assert result.status == "success", result.error
    assert rows(pg_url, "SELECT COUNT(*), COUNT(DISTINCT id) FROM salesrabbit_leads") == [(5_000, 5_000)]
    m = json.loads(history(pg_url)[-1].performance_metrics) if isinstance(
        history(pg_url)[-1].performance_metrics, str) else history(pg_url)[-1].performance_metrics
    assert m["retry_causes"] == {"HTTP 429 (rate limit)": 4, "HTTP 503": 3} and m["throttled"] == 4
    assert "salesrabbit.leads: retried 4 times: HTTP 429 (rate limit)" in caplog.text


def test_a_storm_longer_than_the_retries_fails_with_one_clear_line(rabbit, pg_url, caplog):
    rabbit.inject(503, count=50, path_contains="/leads")
    result = run(spec(rabbit, retries={"max_attempts": 4, "backoff": 0.01}), pg_url)
    assert result.status == "failed"
    assert (f"salesrabbit.leads: page 1 of GET {rabbit.base_url}/leads?perPage=2000&sortBy=dateModified&"
            f"order=asc&page=1 still failing after 4 attempts; last error HTTP 503: "
            '{"message": "Server Error"}') in result.error
    assert "\n" not in result.error and TOKEN not in result.error + caplog.text


def test_truncated_json_pages_are_retried_and_every_lead_lands(rabbit, pg_url):
    rabbit.faults.malformed_requests = {2, 3, 4}  # the second page, cut off mid-JSON three times
    result = run(spec(rabbit, per_page=1000, retries=FAST_RETRIES), pg_url)
    assert result.status == "success", result.error
    assert rabbit.counters.malformed == 3
    assert rows(pg_url, "SELECT COUNT(*), COUNT(DISTINCT id) FROM salesrabbit_leads") == [(5_000, 5_000)]
    assert result.stats.fetched == 5_000


def test_plan_shows_the_window_in_the_header(rabbit):
    res = CliRunner().invoke(main, ["plan", str(SPECS / "leads.yaml"), "--start-date", "2025-07-04"],
                             env=env(rabbit))
    assert res.exit_code == 0, res.output
    assert '"If-Modified-Since": "Fri, 04 Jul 2025 00:00:00 GMT"' in res.output
    full = CliRunner().invoke(main, ["plan", str(SPECS / "leads.yaml"), "--full"], env=env(rabbit))
    assert '"headers": {}' in full.output  # a full run sends no header
    assert TOKEN not in res.output + full.output


def test_users_listing_that_ignores_the_page_stops_at_the_first_repeat(pg_url, caplog):
    """The old integration saw /users answer every user on every page; with a morePages that never
    says false, following the pages would loop. A page repeating the one before ends the listing."""
    with FakeSalesRabbit(token=TOKEN, users_ignore_paging=True) as fake:
        fake.seed(users=30, leads=0, start=T0)
        result = run(spec(fake, "users", per_page=10), pg_url)
        assert result.status == "success", result.error
        assert rows(pg_url, "SELECT COUNT(*), COUNT(DISTINCT id) FROM salesrabbit_users") == [(30, 30)]
        assert fake.counters.requests == 2
        assert "page 2 of GET" in caplog.text and "repeats the page before record for record" in caplog.text
        m = history(pg_url)[-1].performance_metrics
        assert (json.loads(m) if isinstance(m, str) else m)["repeated_pages"] == 1
