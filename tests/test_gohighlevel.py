"""GoHighLevel end to end: `syncrunner run specs/gohighlevel/` through the CLI into PostgreSQL against
the fake (tests/fakes/gohighlevel.py): the two-value cursor, mark-and-sweep deletes, the rate-limit
headers (burst window, 429s, the daily cap), bad tokens and 5xx storms."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from syncrunner.cli import main
from syncrunner.dburl import create_engine
from syncrunner.sources.http.ratelimit import RateHeaders
from syncrunner.spec.load import check_spec
from tests.fakes import FakeGoHighLevel
from tests.fakes.restkit import utc
from tests.helpers import history, rows

SPECS = Path(__file__).resolve().parents[1] / "specs" / "gohighlevel"
TOKEN = "pit-8c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f"
T0 = utc(2025, 3, 1, 9)
LATER = utc(2026, 1, 5, 12)


def ghl_env(fake: FakeGoHighLevel, token: str = TOKEN) -> dict[str, str]:
    return {"GHL_BASE_URL": fake.base_url, "GHL_TOKEN": token, "GHL_LOCATION_ID": fake.location_id}


def run(fake: FakeGoHighLevel, target: str, *args: str, token: str = TOKEN):
    return CliRunner().invoke(main, ["run", str(SPECS), "--target", target, *args], env=ghl_env(fake, token))


def landed(target: str, table: str, updated: str) -> dict[str, str]:
    """id -> updated timestamp as the API writes it, of the live rows."""
    got = rows(target, f"SELECT id, {updated} FROM {table} WHERE deleted_at IS NULL")
    return {r[0]: r[1].strftime("%Y-%m-%dT%H:%M:%S.") + f"{r[1].microsecond // 1000:03d}Z" for r in got}


def upstream(fake: FakeGoHighLevel, kind: str) -> dict[str, str]:
    index = fake.opportunities if kind == "opportunities" else fake.contacts
    return {r.id: r.updated.strftime("%Y-%m-%dT%H:%M:%S.") + f"{r.updated.microsecond // 1000:03d}Z"
            for r in index.rows.values()}


def last_run(target: str, entity: str):
    return [h for h in history(target) if h.sync_type == entity][-1]


def metrics_of(row) -> dict:
    m = row.performance_metrics
    return json.loads(m) if isinstance(m, str) else m


@pytest.fixture
def ghl():
    # a 1 s burst window keeps the tests fast; its pacing is the same as the real 10 s one
    with FakeGoHighLevel(TOKEN, burst_max=100, burst_window_s=1.0) as fake:
        yield fake


def test_folder_run_lands_every_record_once_then_a_delta_updates_exactly_the_changed(ghl, pg_url):
    # bulk imports share creation milliseconds: startAfter alone would skip records at page edges
    opp_ids = ghl.seed_opportunities(437, T0, same_time_every=7)
    contact_ids = ghl.seed_contacts(163, T0)
    res = run(ghl, pg_url)
    assert res.exit_code == 0, res.output
    assert landed(pg_url, "ghl_opportunities", "updated_at") == upstream(ghl, "opportunities")
    assert landed(pg_url, "ghl_contacts", "date_updated") == upstream(ghl, "contacts")
    assert rows(pg_url, "SELECT count(*) FROM ghl_opportunities")[0][0] == 437
    assert not any("nextPageUrl" in e.path or e.path.startswith("http") for e in ghl.log)
    first = last_run(pg_url, "opportunities")
    assert (first.records_created, first.records_updated) == (437, 0)

    ghl.touch("opportunities", opp_ids[100:109], LATER, status="won", monetaryValue=777)
    ghl.touch("contacts", contact_ids[:4], LATER, companyName="Acme Roofing")
    res = run(ghl, pg_url)
    assert res.exit_code == 0, res.output
    opp, con = last_run(pg_url, "opportunities"), last_run(pg_url, "contacts")
    assert (opp.records_created, opp.records_updated, con.records_created, con.records_updated) == (0, 9, 0, 4)
    assert landed(pg_url, "ghl_opportunities", "updated_at") == upstream(ghl, "opportunities")
    won = rows(pg_url, "SELECT id FROM ghl_opportunities WHERE monetary_value = 777 AND status = 'won'")
    assert {r[0] for r in won} == set(opp_ids[100:109])
    assert {r[0] for r in rows(pg_url, "SELECT id FROM ghl_contacts WHERE company_name = 'Acme Roofing'")} \
        == set(contact_ids[:4])


def test_200_removed_upstream_are_marked_deleted_by_the_next_run(ghl, pg_url):
    ids = ghl.seed_opportunities(5000, T0, step=timedelta(seconds=41), same_time_every=3)
    assert run(ghl, pg_url, "--only", "opportunities").exit_code == 0
    gone = ids[1234:1434]
    ghl.delete("opportunities", gone)
    ghl.touch("opportunities", ids[:5], LATER, name="changed")
    res = run(ghl, pg_url, "--only", "opportunities")  # a delta run: the id listing is complete anyway
    assert res.exit_code == 0, res.output
    marked = rows(pg_url, "SELECT id FROM ghl_opportunities WHERE deleted_at IS NOT NULL")
    assert {r[0] for r in marked} == set(gone)
    row = last_run(pg_url, "opportunities")
    d = metrics_of(row)["deletes"]
    assert (d["status"], d["records_deleted"], d["ids_listed"], row.records_updated) == ("done", 200, 4800, 5)
    # nothing else moved: every live row is upstream, with its values
    assert landed(pg_url, "ghl_opportunities", "updated_at") == upstream(ghl, "opportunities")


def test_the_sweep_is_refused_above_the_fraction_and_on_a_partial_run(ghl, pg_url):
    ids = ghl.seed_opportunities(50, T0)
    assert run(ghl, pg_url, "--only", "opportunities").exit_code == 0
    ghl.delete("opportunities", ids[:20])
    run(ghl, pg_url, "--only", "opportunities")
    d = metrics_of(last_run(pg_url, "opportunities"))["deletes"]
    assert d["status"] == "refused" and "more than max_delete_fraction 0.2" in d["reason"]
    assert rows(pg_url, "SELECT count(*) FROM ghl_opportunities WHERE deleted_at IS NOT NULL")[0][0] == 0

    ghl.delete("opportunities", ids[20:22])
    ghl.add_opportunity(LATER, name="x" * 300)  # longer than the field's max_length: rejected
    res = run(ghl, pg_url, "--only", "opportunities", "--allow-mass-delete")
    row = last_run(pg_url, "opportunities")
    assert row.status == "partial" and res.exit_code != 0
    assert metrics_of(row)["deletes"]["reason"] == "not swept: the run ended partial"
    assert rows(pg_url, "SELECT count(*) FROM ghl_opportunities WHERE deleted_at IS NOT NULL")[0][0] == 0


def test_bad_token_fails_clearly_with_the_apis_body_and_no_secret(ghl, pg_url):
    ghl.seed_opportunities(5, T0)
    wrong = "pit-ffffffff-0000-1111-2222-333333333333"
    res = run(ghl, pg_url, token=wrong)
    assert res.exit_code != 0
    assert "HTTP 401" in res.output and '"Invalid JWT"' in res.output and "bearer token" in res.output
    assert wrong not in res.output and TOKEN not in res.output
    assert ghl.count(401) == 2  # one request per entity: a refused credential is not retried
    for h in history(pg_url):
        assert wrong not in (h.error_message or "") and h.status == "failed"


def test_a_429_storm_waits_what_the_rate_limit_headers_say(ghl, pg_url, caplog):
    ghl.seed_opportunities(450, T0)
    ghl.inject(429, count=4, path_contains="opportunities")
    with caplog.at_level(logging.DEBUG, logger="syncrunner"):
        res = run(ghl, pg_url, "--only", "opportunities")
    assert res.exit_code == 0, res.output
    assert len(landed(pg_url, "ghl_opportunities", "updated_at")) == 450
    waits = [float(m) for m in re.findall(r"HTTP 429: .*? retry \d/5 in ([\d.]+)s", caplog.text)]
    # no Retry-After: X-RateLimit-Remaining 0 with a 1,000 ms window -> 1 s each (backoff would
    # start at 0.25-0.5 s)
    assert len(waits) == 4 and all(1.0 <= w < 1.1 for w in waits), waits
    assert metrics_of(last_run(pg_url, "opportunities"))["throttled"] == 4


def test_a_used_up_burst_window_pauses_before_the_next_request_instead_of_hitting_429(pg_url):
    with FakeGoHighLevel(TOKEN, burst_max=5, burst_window_s=1.0) as fake:
        fake.seed_opportunities(1200, T0)  # 13 listing pages (the last one empty) and 13 id pages
        res = run(fake, pg_url, "--only", "opportunities")
        assert res.exit_code == 0, res.output
        assert fake.count(429) == 0 and fake.count(200) == 26
        assert metrics_of(last_run(pg_url, "opportunities"))["rate_limit_wait_seconds"] >= 4.5  # 5 full windows


def test_the_daily_cap_fails_fast_saying_when_it_resets(pg_url):
    with FakeGoHighLevel(TOKEN, daily_limit=6) as fake:
        fake.seed_opportunities(1500, T0)
        res = run(fake, pg_url, "--only", "opportunities")
        assert res.exit_code != 0
        assert "daily request budget is used up (X-RateLimit-Daily-Remaining: 0)" in res.output
        assert "resets within 24 hours" in res.output
        assert len(fake.log) == 6 and fake.count(429) == 0  # stopped before a seventh request
        row = last_run(pg_url, "opportunities")
        assert row.status == "failed" and "daily request budget" in row.error_message


def test_a_daily_cap_reached_by_someone_else_stops_at_the_first_429(pg_url):
    with FakeGoHighLevel(TOKEN, daily_limit=3) as fake:
        fake.seed_opportunities(10, T0)
        import requests
        for _ in range(3):  # another client of the same app and location spends the day's budget
            requests.get(f"{fake.base_url}/contacts/", params={"locationId": fake.location_id},
                         headers={"Authorization": f"Bearer {TOKEN}", "Version": "2021-07-28"})
        res = run(fake, pg_url, "--only", "opportunities")
        assert res.exit_code != 0 and "HTTP 429" in res.output and "daily request budget" in res.output
        assert fake.count(429) == 1  # not retried


def test_a_5xx_storm_is_retried_and_nothing_is_lost(ghl, pg_url):
    ghl.seed_opportunities(320, T0, same_time_every=4)
    ghl.seed_contacts(40, T0)
    ghl.inject(502, count=3, path_contains="opportunities")
    ghl.inject(500, count=2, path_contains="contacts")
    res = run(ghl, pg_url)
    assert res.exit_code == 0, res.output
    assert landed(pg_url, "ghl_opportunities", "updated_at") == upstream(ghl, "opportunities")
    assert landed(pg_url, "ghl_contacts", "date_updated") == upstream(ghl, "contacts")
    assert ghl.count(502) == 3 and ghl.count(500) == 2
    assert metrics_of(last_run(pg_url, "opportunities"))["retries"] == 3


RSS_PROBE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
             "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
             "sys.exit(r.returncode)")


def peak_rss_kb(fake: FakeGoHighLevel, target: str) -> int:
    """Peak resident memory of a real `syncrunner run` process (getrusage of the child that ran it)."""
    # default settings: an HTTP source starts no mapping workers, so 50,000 runs the same code as 5,000
    env = {k: v for k, v in os.environ.items() if k != "SYNCRUNNER_MAP_WORKERS"}
    env.update(ghl_env(fake))
    done = subprocess.run([sys.executable, "-c", RSS_PROBE, sys.executable, "-m", "syncrunner.cli", "run",
                           str(SPECS), "--only", "opportunities", "--target", target],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return int(re.search(r"peak_rss_kb (\d+)", done.stderr).group(1))


def drop_tables(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("DROP TABLE IF EXISTS ghl_opportunities, sr_seen_ghl_opportunities, sync_history"))
    engine.dispose()


def test_peak_memory_is_the_same_for_5000_and_50000_opportunities(pg_url):
    peaks = {}
    for n in (5000, 50000):
        with FakeGoHighLevel(TOKEN, burst_max=1_000_000) as fake:
            fake.seed_opportunities(n, T0, step=timedelta(seconds=13), same_time_every=5)
            drop_tables(pg_url)
            peaks[n] = peak_rss_kb(fake, pg_url)
            assert rows(pg_url, "SELECT count(*) FROM ghl_opportunities")[0][0] == n
            assert fake.count(200) == 2 * (n // 100 + 1)  # two passes, each ending on an empty page
            assert metrics_of(last_run(pg_url, "opportunities"))["map_workers"] == 0
    print(f"\n  peak RSS of the run: 5,000 -> {peaks[5000]:,} kB, 50,000 -> {peaks[50000]:,} kB")
    assert peaks[50000] <= peaks[5000] * 1.15, peaks


# ----- the generic pieces: reset headers in their other forms, lint of the new keys -------------------
@pytest.mark.parametrize("headers,wait", [
    ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "7"}, 7.0),                # seconds from now
    ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1700000030"}, 30.0),      # epoch seconds
    ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1700000012500"}, 12.5),   # epoch milliseconds
    ({"x-ratelimit-remaining": "0", "X-RateLimit-Interval-Milliseconds": "10000"}, 10.0),  # window only
])
def test_reset_headers_in_seconds_epoch_or_window_length(headers, wait):
    import requests.structures
    signal = RateHeaders().read(requests.structures.CaseInsensitiveDict(headers), now=1_700_000_000.0)
    assert signal.window_spent and signal.wait == pytest.approx(wait)


def test_declared_header_names_and_a_daily_reset_time():
    names = RateHeaders.from_options({"remaining": "RateLimit-Remaining", "reset": "RateLimit-Reset",
                                      "daily_remaining": "X-Day-Left", "daily_reset": "X-Day-Reset"})
    signal = names.read({"RateLimit-Remaining": "3", "RateLimit-Reset": "2", "X-Day-Left": "0",
                         "X-Day-Reset": "1700006400"}, now=1_700_000_000.0)
    assert (signal.remaining, signal.window_spent, signal.daily_spent) == (3, False, True)
    assert "it resets at 2023-11-15 00:00:00 UTC" in signal.daily_message()


SPEC = """\
crm: t
entity: e
source:
  kind: {kind}
  {source}
  key: id
  cursor: updated
target: {{table: t, key: [id]}}
deletes:
  mode: mark_and_sweep
  ids: {ids}
fields:
  id: {{from: id, type: string}}
  updated: {{from: updated, type: datetime}}
"""
HTTP = "base_url: http://x\n  request: {path: /x}\n  records: items\n  pagination: {type: cursor, next: {a: 'meta.a', b: 'meta.[b'}}"


@pytest.mark.parametrize("kind,source,ids,key,message", [
    ("http", HTTP, "{key: id}", "source.pagination.next.b", "not a valid jmespath"),
    ("http", HTTP.replace("meta.[b", "meta.b"), "{key: [id, other]}", "deletes.ids.key",
     "2 key path(s) for a source.key of 1"),
    ("http", HTTP.replace("meta.[b", "meta.b"), "{records: 'items[', request: {params: {x: '{{ nope( }}'}}}",
     "deletes.ids.records", "not a valid jmespath"),
    ("sql", "url: sqlite://\n  query: SELECT 1", "{}", "deletes.mode", "HTTP sources only"),
])
def test_lint_checks_the_cursor_tokens_and_the_id_listing(tmp_path, kind, source, ids, key, message):
    (tmp_path / "s.yaml").write_text(SPEC.format(kind=kind, source=source, ids=ids))
    spec, problems = check_spec(tmp_path / "s.yaml")
    assert spec is None
    assert [p.key for p in problems if message in p.message] == [key], problems


def test_the_gohighlevel_specs_lint_clean():
    for path in SPECS.glob("*.yaml"):
        spec, problems = check_spec(path, {"GHL_TOKEN": "t", "GHL_LOCATION_ID": "l"})
        assert spec is not None and problems == [], problems
