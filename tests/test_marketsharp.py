"""MarketSharp leads (OData v2) through the CLI into PostgreSQL, against the fake in
tests/fakes/marketsharp.py: `__next` paging, `/Date(...)/` values, `$filter` with OData datetime
literals, a lead modified between pages, and a run killed between pages that resumes exactly."""
from __future__ import annotations

import base64
import datetime as dt
import os
import signal
import threading
from pathlib import Path

import pytest

from tests.fakes.marketsharp import FakeMarketSharp
from tests.helpers import cli, cli_start, history, rows
from tests.test_crash import _json, _wait_for_progress

SPECS = Path(__file__).resolve().parent.parent / "specs"
COMPANY, API_KEY = "1239", "ms-api-key-0c1d2e3f"
SECRET = base64.b64encode(b"marketsharp-secret-key-32-bytes!").decode()


@pytest.fixture
def ms():
    with FakeMarketSharp(COMPANY, API_KEY, SECRET) as fake:
        yield fake


def env_for(fake: FakeMarketSharp, pg_url: str, **extra: str) -> dict:
    env = dict(os.environ, MARKETSHARP_BASE_URL=fake.base_url, MARKETSHARP_COMPANY_ID=COMPANY,
               MARKETSHARP_API_KEY=API_KEY, MARKETSHARP_SECRET_KEY=SECRET, SYNCRUNNER_TARGET_URL=pg_url)
    env.update(extra)
    return env


def run(fake: FakeMarketSharp, pg_url: str, *args: str, **extra: str):
    return cli("run", SPECS / "marketsharp", "--no-progress", *args, env=env_for(fake, pg_url, **extra), timeout=180)


def landed(pg_url: str) -> dict[str, tuple]:
    return {r[0]: tuple(r[1:]) for r in rows(
        pg_url, "SELECT id, first_name, last_name, email, created_at, last_update FROM marketsharp_leads")}


def upstream(fake: FakeMarketSharp) -> dict[str, tuple]:
    return {c["id"]: (c["firstName"], c["lastName"], c["email1"], c["creationDate"], c["lastUpdate"])
            for c in fake.contacts.values() if c["contactType"] == 2}


def test_folder_run_lands_every_lead_once_through_next_links_then_only_the_changed(ms, pg_url):
    ids = ms.seed(1100, same_ms=3)
    ms.seed(40, contact_type=3)  # customers: not leads
    first = run(ms, pg_url)
    assert first.returncode == 0, first.stdout + first.stderr
    assert landed(pg_url) == upstream(ms) and len(upstream(ms)) == 1100
    # /Date(ms)/ and /Date(ms-0400)/ (the offset marks a local kind, it does not move the instant)
    assert landed(pg_url)[ids[0]][3] == ms.contacts[ids[0]]["creationDate"]
    # five pages of at most 250, each the __next link of the one before ($skiptoken, a keyset)
    assert [bool(q.get("$skiptoken")) for q in ms.requests_seen] == [False, True, True, True, True]
    assert ms.requests_seen[0]["$filter"] == "contactType eq 2"
    h = history(pg_url)[-1]
    assert (h.status, h.records_processed, h.records_created) == ("success", 1100, 1100)

    watermark = max(c["lastUpdate"] for c in ms.contacts.values() if c["contactType"] == 2)
    ms._clock += dt.timedelta(hours=1)
    for cid in ids[100:110]:
        ms.update(cid, email1=f"changed.{cid[-4:]}@example.com")
    new = ms.seed(3)
    ms.requests_seen.clear()
    second = run(ms, pg_url)
    assert second.returncode == 0, second.stdout + second.stderr
    h = history(pg_url)[-1]
    assert (h.records_created, h.records_updated, h.records_failed) == (3, 10, 0)
    since = (watermark - dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S")
    assert ms.requests_seen[0]["$filter"].startswith(f"contactType eq 2 and lastUpdate ge datetime'{since}")
    assert landed(pg_url) == upstream(ms) and set(new) <= set(landed(pg_url))


def test_a_lead_modified_between_pages_lands_once_with_its_latest_values(ms, pg_url):
    ids = ms.seed(700)

    def modify(entity: str, page: int) -> None:
        if page == 2:  # after page 1 was read: a lead of page 1 moves to the end
            ms.update(ids[5], lastName="Moved")
    ms.page_hook = modify
    res = run(ms, pg_url)
    assert res.returncode == 0, res.stdout + res.stderr
    assert landed(pg_url) == upstream(ms) and landed(pg_url)[ids[5]][1] == "Moved"
    h = history(pg_url)[-1]
    assert (h.records_processed, h.records_created, h.records_updated) == (701, 700, 1)


def test_malformed_leads_are_dead_lettered(ms, pg_url):
    ids = ms.seed(30)
    ms.contacts[ids[4]]["email1"] = "nobody-at-example"
    ms.contacts[ids[9]]["creationDate"] = "/Date(not-a-number)/"
    res = run(ms, pg_url)
    assert res.returncode == 3, res.stdout + res.stderr
    assert set(landed(pg_url)) == set(ids) - {ids[4], ids[9]}
    bad = {r[0] for r in rows(pg_url, "SELECT record_key FROM sync_dead_letters")}
    assert bad == {ids[4], ids[9]}


def test_a_wrong_secret_fails_at_once_with_the_odata_error(ms, pg_url):
    ms.seed(5)
    other = base64.b64encode(b"another-secret-key-of-32-bytes!!").decode()
    res = run(ms, pg_url, MARKETSHARP_SECRET_KEY=other)
    assert res.returncode == 1
    assert "HTTP 401" in res.stderr and "HMAC-signed Authorization header" in res.stderr
    assert "${MARKETSHARP_SECRET_KEY}" in res.stderr and other not in res.stderr + res.stdout
    assert ms.count(401) == 1


def test_throttling_and_server_errors_are_retried(ms, pg_url):
    ms.seed(600)
    ms.inject(429, count=2)
    ms.inject(503, count=1)
    res = run(ms, pg_url)
    assert res.returncode == 0, res.stdout + res.stderr
    assert landed(pg_url) == upstream(ms) and ms.count(429) == 2 and ms.count(503) == 1


def test_a_run_killed_between_pages_resumes_exactly(ms, pg_url):
    """A real `syncrunner run` process is SIGKILLed while it waits for page 7 (after at least two
    500-lead chunks were committed); the next run resumes from the checkpoint with a fresh query
    from the last lastUpdate read ('ge' it, dropping the ids already read there) and reads only
    the rest. Leads come seven to a millisecond, so the checkpoint falls inside a tie."""
    n = 3000
    ms.seed(n, same_ms=7)
    hold = threading.Event()

    def block(entity: str, page: int) -> None:
        if page == 7:
            hold.wait(60)
    ms.page_hook = block
    a = cli_start("run", SPECS / "marketsharp", "--no-progress", env=env_for(ms, pg_url))
    try:
        _wait_for_progress(pg_url, 1000)
        a.send_signal(signal.SIGKILL)
        a.communicate(timeout=30)
    finally:
        hold.set()
    run_a = history(pg_url)[-1]
    assert run_a.status == "running" and 1000 <= run_a.records_processed < n
    checkpoint = _json(run_a.checkpoint)
    ms.page_hook = None
    ms.requests_seen.clear()

    b = run(ms, pg_url)
    assert b.returncode == 0, b.stdout + b.stderr
    run_b = history(pg_url)[-1]
    assert _json(run_b.configuration)["resumed_from"] == run_a.id
    assert run_b.records_processed == n - run_a.records_processed
    assert run_a.records_created + run_b.records_created == n
    assert rows(pg_url, "SELECT COUNT(*), COUNT(DISTINCT id) FROM marketsharp_leads")[0] == (n, n)
    assert landed(pg_url) == upstream(ms)
    # the checkpoint fell inside a tie: the resumed query starts at that millisecond, 'ge' it
    position = checkpoint["position"]
    at = dt.datetime.fromisoformat(position["cursor"]["$dt"]).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    assert 0 < len(position["keys"]) < 7
    assert ms.requests_seen[0]["$filter"] == f"contactType eq 2 and lastUpdate ge datetime'{at}'".replace(".000'", "'")
