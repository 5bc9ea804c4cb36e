"""Page concurrency (`pagination.concurrency`, sources/http/pagepool.py): pages fetched at once from
the Arrivy fake (real loopback HTTP), through the real CLI into real PostgreSQL."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
from pathlib import Path

import pytest

from syncrunner.runtime.engine import run_spec
from syncrunner.runtime.strategy import RunOptions
from syncrunner.spec.load import load_spec
from tests.fakes.arrivy import FakeArrivy
from tests.fakes.restkit import BadRequest
from tests.helpers import cli, cli_start, history, rows
from tests.test_crash import _json, _wait_for_progress
from tests.test_http_source import ListAPI, offset_list_spec

KEY, TOKEN = "arrivy-key-5c1d2e3f", "arrivy-token-9a8b7c6d-secret"
T0 = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.timezone.utc)

TASKS_SPEC = """\
crm: arrivy
entity: {table}
source:
  kind: http
  base_url: ${{ARRIVY_BASE_URL}}
  auth: {{type: header, name: X-Auth-Token, value: "${{ARRIVY_AUTH_TOKEN}}"}}
  request:
    path: /api/tasks
    headers: {{X-Auth-Key: "${{ARRIVY_AUTH_KEY}}"}}
    params: {{items_per_page: {per_page}, from: "{{{{ since | iso }}}}"}}
  records: "@"
  pagination: {{type: page, param: page{concurrency}}}
  cursor: start_datetime
  key: id
{extra}  retries: {{max_attempts: 6, backoff: 0.05, max_backoff: 0.2}}
  chunk_size: {chunk}
target: {{table: {table}, key: [id], batch_size: {chunk}}}
fields:
  id:             {{type: integer, required: true}}
  title:          {{type: string, max_length: 200}}
  status:         {{type: string, max_length: 32}}
  start_datetime: {{type: datetime, required: true}}
  end_datetime:   {{type: datetime}}
  external_id:    {{type: string, max_length: 64}}
  customer_city:  {{type: string, max_length: 100}}
"""
SORTED = "  sorted_by_cursor: true\n  next_page: pagination\n"


def arrivy_spec(folder: Path, concurrency: int = 1, per_page: int = 100, sorted_: bool = False,
                chunk: int = 500, table: str = "arrivy_tasks", extra: str = "") -> Path:
    """Arrivy tasks paged by page number; `sorted_`: the fake's order (start_datetime, id) declared,
    so a checkpoint is exact and a resumed run starts from it (`from`); `extra`: source lines."""
    path = folder / f"{table}_c{concurrency}.yaml"
    path.write_text(TASKS_SPEC.format(per_page=per_page, chunk=chunk, table=table,
                                      extra=(SORTED if sorted_ else "") + extra,
                                      concurrency=f", concurrency: {concurrency}" if concurrency > 1 else ""))
    return path


@pytest.fixture
def arrivy():
    with FakeArrivy(KEY, TOKEN) as fake:
        yield fake


def env(fake: FakeArrivy, target: str) -> dict:
    return dict(os.environ, ARRIVY_BASE_URL=fake.base_url, ARRIVY_AUTH_KEY=KEY, ARRIVY_AUTH_TOKEN=TOKEN,
                SYNCRUNNER_TARGET_URL=target)


def landed(url: str, table: str = "arrivy_tasks") -> list[tuple]:
    return [tuple(r) for r in rows(url, f"SELECT id, title, status, start_datetime, external_id "
                                        f"FROM {table} ORDER BY id")]


def metrics(url: str) -> dict:
    m = history(url)[-1].performance_metrics
    return m if isinstance(m, dict) else json.loads(m)


def pages_asked(fake: FakeArrivy) -> list[int]:
    return [int(e.query.get("page", ["1"])[0]) for e in fake.log if e.path == "/api/tasks"]


def run_cli(fake: FakeArrivy, target: str, spec: Path, *flags: object):
    done = cli("run", spec, "--no-progress", *flags, env=env(fake, target))
    return done


# -- the same rows, pages really at once, the end found ----------------------------------------------
def test_four_pages_at_once_land_exactly_what_the_sequential_run_lands(arrivy, pg_url, tmp_path):
    arrivy.seed(T0, tasks=1230, statuses_per_task=0)  # 12 full pages of 100, a short 13th, an empty 14th
    arrivy.faults.latency_seconds = 0.03
    seen = {}
    for c in (1, 4):
        arrivy.reset_log()
        done = run_cli(arrivy, pg_url, arrivy_spec(tmp_path, c, table=f"tasks_c{c}", chunk=100))
        assert done.returncode == 0, done.stdout + done.stderr
        seen[c] = landed(pg_url, f"tasks_c{c}"), pages_asked(arrivy), arrivy.counters.max_in_flight, metrics(pg_url)
    (seq_rows, seq_pages, seq_flight, _), (rows4, pages4, flight4, m4) = seen[1], seen[4]
    assert rows4 == seq_rows and len(rows4) == 1230
    assert [r[0] for r in rows4] == sorted(arrivy.store["tasks"])  # every fake record, once
    assert rows(pg_url, "SELECT COUNT(*), COUNT(DISTINCT id) FROM tasks_c4")[0] == (1230, 1230)
    # pages overlapped at the server (counted there), never more than 4 at once
    assert seq_flight == 1 and 2 <= flight4 <= 4
    # the end is where the sequential run found it (the empty page 14), plus at most 3 pages past it
    assert seq_pages == list(range(1, 15))
    assert sorted(pages4)[:14] == list(range(1, 15)) and len(set(pages4)) == len(pages4)
    assert max(pages4) <= 17 and m4["pages_fetched_unused"] == len(pages4) - 14
    assert m4["page_concurrency"] == 4 and m4["pages"] == 14
    # committed in page order: each chunk's transaction id grows with the listing's order
    xids = [r[0] for r in rows(pg_url, "SELECT xmin::text::bigint FROM tasks_c4 ORDER BY start_datetime, id")]
    assert xids == sorted(xids) and len(set(xids)) == 13


def test_offset_pages_are_guessed_from_the_step_and_end_at_the_total(tmp_path, pg_url):
    with ListAPI() as api:
        spec = offset_list_spec(tmp_path, api.base_url, more=", concurrency: 4")
        api.faults.latency_seconds = 0.03
        result = run_spec(load_spec(spec, {"API_KEY": "qkey-123456"}), RunOptions(), pg_url)
        assert result.status == "success", result.error
        offsets = [int(e.query["offset"][0]) for e in api.log]
    assert rows(pg_url, "SELECT COUNT(*), COUNT(DISTINCT id) FROM items")[0] == (120, 120)
    # (in the order the requests arrived) the first page alone: the step is not known before it;
    # then ahead; total ends the listing at 100, and the guesses past it are at most 3
    assert offsets[0] == 0 and sorted(offsets)[:5] == [0, 25, 50, 75, 100]
    assert len(offsets) <= 8 and len(set(offsets)) == len(offsets)
    assert api.counters.max_in_flight >= 2


# -- rate budget, retries, failures --------------------------------------------------------------------
def test_a_429_on_one_page_is_retried_and_nothing_is_lost(arrivy, pg_url, tmp_path):
    arrivy.seed(T0, tasks=1000, statuses_per_task=0)
    arrivy.faults.latency_seconds = 0.02

    def throttle_once(kind: str, page: int) -> None:
        if page == 5:  # the next request, whichever page it asks for, is refused with a 429
            arrivy.inject(429, path_contains="/api/tasks")
    arrivy.page_hook = throttle_once
    done = run_cli(arrivy, pg_url, arrivy_spec(tmp_path, 4))
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r[0] for r in landed(pg_url)] == sorted(arrivy.store["tasks"])
    refused = [e for e in arrivy.log if e.status == 429]
    assert len(refused) == 1 and arrivy.counters.max_in_flight >= 2
    again = [e for e in arrivy.log if e.query == refused[0].query and e.status == 200]
    assert len(again) == 1 and again[0].at >= refused[0].at + 1  # after its Retry-After (1 s)
    m = metrics(pg_url)
    assert (m["throttled"], m["retries"]) == (1, 1)


def test_the_rate_budget_is_shared_by_the_pages_in_flight(arrivy, pg_url, tmp_path):
    """Four pages at once, each taking 0.5 s, would send 8 requests a second on their own; the
    spec's budget of 4 a second is shared by all four, so the API's limit of 6 is never hit."""
    arrivy.seed(T0, tasks=600, statuses_per_task=0)
    arrivy.faults.latency_seconds = 0.5
    arrivy.faults.rate_limit_per_second = 6
    spec = arrivy_spec(tmp_path, 4, per_page=50, extra="  rate_limit: {per_second: 4}\n")
    done = run_cli(arrivy, pg_url, spec)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r[0] for r in landed(pg_url)] == sorted(arrivy.store["tasks"])
    assert arrivy.counters.throttled == 0 and metrics(pg_url)["retries"] == 0
    assert arrivy.counters.max_in_flight >= 2


def test_a_failed_page_fails_the_run_as_it_does_sequentially(arrivy, pg_url, tmp_path):
    arrivy.seed(T0, tasks=1000, statuses_per_task=0)
    arrivy.faults.latency_seconds = 0.02

    def refuse(kind: str, page: int) -> None:
        if page == 7:
            raise BadRequest("items_per_page conflicts with page")
    arrivy.page_hook = refuse
    outcome = {}
    for c in (1, 4):
        done = run_cli(arrivy, pg_url, arrivy_spec(tmp_path, c, table=f"tasks_c{c}", chunk=200))
        run = history(pg_url)[-1]
        outcome[c] = done.returncode, run.status, run.error_message.replace(f"tasks_c{c}", "T"), landed(pg_url, f"tasks_c{c}")
    assert outcome[4] == outcome[1]
    code, status, error, committed = outcome[4]
    assert (code, status) == (1, "failed") and "HTTP 400 from page 7 of GET" in error, error
    assert [r[0] for r in committed] == sorted(arrivy.store["tasks"])[:600]  # 3 chunks, pages 1-6


# -- a kill mid-run ----------------------------------------------------------------------------------
def test_a_killed_run_with_pages_in_flight_resumes_from_its_checkpoint(arrivy, pg_url, tmp_path):
    """SIGKILL while four pages are in flight; the next run starts at the checkpoint's cursor value
    (`from`) and reads exactly the rest: no record lost, none twice."""
    n = 4000
    arrivy.seed(T0, tasks=n, statuses_per_task=0)
    arrivy.faults.latency_seconds = 0.15
    spec = arrivy_spec(tmp_path, 4, per_page=50, sorted_=True, chunk=250)
    a = cli_start("run", spec, "--no-progress", env=env(arrivy, pg_url))
    _wait_for_progress(pg_url, 1000)
    a.send_signal(signal.SIGKILL)
    a.communicate()
    run_a = history(pg_url)[-1]
    assert run_a.status == "running" and 1000 <= run_a.records_processed < n
    assert arrivy.counters.max_in_flight >= 2

    while arrivy.in_flight:  # the killed run's last requests
        time.sleep(0.01)
    arrivy.reset_log()
    arrivy.faults.latency_seconds = 0.0
    done = run_cli(arrivy, pg_url, spec)
    assert done.returncode == 0, done.stdout + done.stderr
    run_b = history(pg_url)[-1]
    assert run_b.status == "success" and _json(run_b.configuration)["resumed_from"] == run_a.id
    assert run_b.records_processed == n - run_a.records_processed
    # B's one query starts at the start time of the last task A committed (every task has its own)
    last_committed = T0 + dt.timedelta(minutes=90 * (run_a.records_processed - 1))
    assert {dt.datetime.fromisoformat(e.query["from"][0]) for e in arrivy.log} == {last_committed}
    assert 1 in pages_asked(arrivy)
    assert rows(pg_url, "SELECT COUNT(*), COUNT(DISTINCT id) FROM arrivy_tasks")[0] == (n, n)
    assert [r[0] for r in landed(pg_url)] == sorted(arrivy.store["tasks"])


# -- plan and lint -------------------------------------------------------------------------------------
def test_plan_shows_the_page_concurrency(arrivy, pg_url, tmp_path):
    done = cli("plan", arrivy_spec(tmp_path, 4), env=env(arrivy, pg_url))
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"pagination": "page"' in done.stdout and '"page_concurrency": 4' in done.stdout


@pytest.mark.parametrize("pagination, sorted_, message", [
    ("{type: cursor, next: next, concurrency: 4}", False,
     "unknown key 'concurrency': type cursor does not take it, only type page and offset"),
    ("{type: next_url, next: next_page, concurrency: 4}", False,
     "unknown key 'concurrency': type next_url does not take it, only type page and offset"),
    ("{type: link_header, concurrency: 4}", False,
     "unknown key 'concurrency': type link_header does not take it, only type page and offset"),
    ("{type: page, concurrency: 4}", True,
     "a sorted source starts every next page as a fresh query from the last cursor value read"),
])
def test_lint_refuses_concurrency_where_pages_cannot_be_fetched_ahead(arrivy, pg_url, tmp_path, pagination,
                                                                       sorted_, message):
    text = arrivy_spec(tmp_path).read_text().replace("{type: page, param: page}", pagination)
    if sorted_:
        text = text.replace("  key: id\n", "  key: id\n  sorted_by_cursor: true\n")
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    done = cli("lint", spec, env=env(arrivy, pg_url))
    line = text.splitlines().index(f"  pagination: {pagination}") + 1
    assert done.returncode != 0
    assert f"{spec}:{line}: source.pagination.concurrency: {message}" in done.stdout + done.stderr
