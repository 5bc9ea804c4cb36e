"""Arrivy (issue 24) end to end: `syncrunner run specs/arrivy/` through the CLI into PostgreSQL
against the Arrivy fake over real loopback HTTP. Also the spec-language pieces it needs: run
parameters (`--param`), `for_each` child requests, and what lint, plan and a delete sweep make
of them."""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncrunner.cli import main
from tests.fakes import FakeArrivy
from tests.fakes.restkit import utc
from tests.helpers import cli, cli_start, history, rows

SPECS = Path(__file__).resolve().parent.parent / "specs" / "arrivy"
KEY, TOKEN = "ak-5f2e9c1d7b3a", "tok-0e7d4c2b9a81-secret"
T0 = utc(2025, 3, 1, 8)
TABLES = {"tasks": "arrivy_tasks", "bookings": "arrivy_bookings", "entities": "arrivy_entities",
          "groups": "arrivy_groups", "task_statuses": "arrivy_task_statuses"}


@pytest.fixture
def arrivy():
    with FakeArrivy(auth_key=KEY, auth_token=TOKEN) as fake:
        fake.seed(T0, tasks=1203, bookings=640, crew=4, groups=3, unscheduled_every=10)
        yield fake


def env_for(fake: FakeArrivy, token: str = TOKEN, rate: str = "1000") -> dict:
    return {"ARRIVY_BASE_URL": fake.base_url, "ARRIVY_AUTH_KEY": KEY, "ARRIVY_AUTH_TOKEN": token,
            "ARRIVY_REQUESTS_PER_SECOND": rate}


def run_cli(fake: FakeArrivy, target: str, *args: str, path: Path = SPECS, token: str = TOKEN):
    return CliRunner().invoke(main, ["run", str(path), "--target", target, "--no-progress", *args],
                              env=env_for(fake, token))


def upstream(fake: FakeArrivy) -> dict[str, dict[int, tuple]]:
    """What every table must hold, from the fake's own data: id -> the fields the test compares."""
    statuses = {s["id"]: (task_id, s["type"]) for task_id, hist in fake.statuses.items() for s in hist}
    return {"tasks": {i: (t["title"], t["status"], t["unscheduled"]) for i, t in fake.store["tasks"].items()},
            "bookings": {i: (b["title"], b["status"]) for i, b in fake.store["bookings"].items()},
            "entities": {i: (e["name"], e["email"]) for i, e in fake.store["entities"].items()},
            "groups": {i: (g["name"],) for i, g in fake.store["groups"].items()},
            "task_statuses": statuses}


def landed(target: str, entities: tuple[str, ...] = tuple(TABLES)) -> dict[str, dict[int, tuple]]:
    cols = {"tasks": "title, status, unscheduled", "bookings": "title, status", "entities": "name, email",
            "groups": "name", "task_statuses": "task_id, type"}
    out = {}
    for entity in entities:
        table = TABLES[entity]
        got = rows(target, f"SELECT id, {cols[entity]} FROM {table} WHERE deleted_at IS NULL")
        assert len(got) == len({r[0] for r in got}), entity
        out[entity] = {r[0]: tuple(r[1:]) for r in got}
    return out


def last_runs(target: str) -> dict[str, object]:
    """The latest SyncHistory row of each entity."""
    return {r.sync_type: r for r in history(target)}


def as_json(value) -> dict:
    return json.loads(value) if isinstance(value, str) else (value or {})


def task_requests(fake: FakeArrivy) -> list:
    return [r for r in fake.log if r.path == "/api/tasks"]


# -- every record of every entity, exactly once; then exactly the changes ------------------------------
def test_folder_run_lands_every_record_once_then_updates_exactly_the_changed_ones(arrivy, pg_url):
    res = run_cli(arrivy, pg_url)
    assert res.exit_code == 0, res.output
    want = upstream(arrivy)
    assert {k: len(v) for k, v in want.items()} == {"tasks": 1203, "bookings": 640, "entities": 4,
                                                    "groups": 3, "task_statuses": 2406}
    assert landed(pg_url) == want  # the 120 unscheduled tasks (a second query) included
    first = last_runs(pg_url)
    assert {e: (r.status, r.records_created) for e, r in first.items()} == {
        e: ("success", len(v)) for e, v in want.items()}
    # one status request per task, after the task listing (4 pages), a short page ends each listing
    assert sum(1 for r in arrivy.log if r.path.endswith("/status")) == 1203

    tasks = sorted(arrivy.store["tasks"])
    arrivy.change("tasks", tasks[5:17], title="Install (moved)")
    for task_id in tasks[100:103]:
        arrivy.add_status(task_id, "COMPLETE", T0 + timedelta(days=8))
    arrivy.change("bookings", sorted(arrivy.store["bookings"])[:7], status="CONFIRMED", title="Estimate (ok)")
    arrivy.change("entities", sorted(arrivy.store["entities"])[:1], name="Crew Lead")
    res = run_cli(arrivy, pg_url)
    assert res.exit_code == 0, res.output
    assert landed(pg_url) == upstream(arrivy)
    second = {e: (r.records_created, r.records_updated) for e, r in last_runs(pg_url).items()}
    # tasks 100-102 got a new status (COMPLETE): 12 retitled + 3 with a new status
    assert second == {"tasks": (0, 15), "bookings": (0, 7), "entities": (0, 1), "groups": (0, 0),
                      "task_statuses": (3, 0)}


# -- --param: narrows the fetch, no sweep, recorded, validated ---------------------------------------
def test_task_status_param_narrows_the_fetch_and_refuses_the_delete_sweep(arrivy, pg_url):
    assert run_cli(arrivy, pg_url, path=SPECS / "tasks.yaml").exit_code == 0
    tasks = sorted(arrivy.store["tasks"])
    done = tasks[200:260]
    for task_id in done:
        arrivy.add_status(task_id, "COMPLETE", T0)
    arrivy.change("tasks", done, title="Done job")
    arrivy.delete("tasks", tasks[:9])  # gone upstream: only an un-narrowed run may mark them
    arrivy.reset_log()

    res = run_cli(arrivy, pg_url, "--param", "task_status=complete", path=SPECS / "tasks.yaml")
    assert res.exit_code == 0, res.output
    sent = task_requests(arrivy)
    assert sent and all(r.query["status"] == ["complete"] for r in sent)
    run = history(pg_url)[-1]
    assert (run.records_processed, run.records_updated) == (60, 60)
    assert rows(pg_url, "SELECT COUNT(*) FROM arrivy_tasks WHERE title = 'Done job'")[0][0] == 60
    assert rows(pg_url, "SELECT COUNT(*) FROM arrivy_tasks WHERE deleted_at IS NOT NULL")[0][0] == 0
    assert "not swept: --param task_status=complete narrows the fetch" in res.output
    config = as_json(run.configuration)
    assert config["params"] == {"task_status": ["complete"], "days_back": None}
    assert config["narrowed_by"] == ["task_status=complete"]
    assert as_json(run.performance_metrics)["deletes"]["status"] == "refused"

    res = run_cli(arrivy, pg_url, path=SPECS / "tasks.yaml")  # the default: every task, and the sweep
    assert res.exit_code == 0, res.output
    gone = {r[0] for r in rows(pg_url, "SELECT id FROM arrivy_tasks WHERE deleted_at IS NOT NULL")}
    assert gone == set(tasks[:9])


def test_a_folder_param_applies_to_every_spec_declaring_it(arrivy, pg_url):
    """days_back is declared by tasks and task_statuses: both send `from`; the others do not."""
    old = sorted(arrivy.store["tasks"])[:3]
    arrivy.change("tasks", old, _start=utc(2001, 1, 1))  # more than 3650 days ago
    res = run_cli(arrivy, pg_url, "--param", "days_back=3650", "--only", "tasks", "--only", "task_statuses",
                  "--only", "groups")
    assert res.exit_code == 0, res.output
    froms = [r.query.get("from", [""])[0] for r in task_requests(arrivy)]
    assert len(froms) == 8 and all("+00:00" in f for f in froms)  # tasks' and the parents' listings
    assert [r.query for r in arrivy.log if r.path == "/api/groups"] == [{}]
    got = last_runs(pg_url)
    assert (got["tasks"].records_processed, got["task_statuses"].records_processed) == (1200, 2400)
    assert sum(1 for r in arrivy.log if r.path.endswith("/status")) == 1200
    assert not set(old) & set(landed(pg_url, ("tasks",))["tasks"])


@pytest.mark.parametrize("args, message", [
    (["--param", "booking_status=BOGUS"], "'BOGUS' is not one of REQUESTED, CONFIRMED, CANCELLED"),
    (["--param", "days_back=week"], "'week' is not an integer"),
    (["--param", "from_date=2025-13-01"], "is not a date (YYYY-MM-DD)"),
    (["--param", "colour=red"], "no spec of this run declares a parameter 'colour'"),
    (["--param", "task_status"], "expected NAME=VALUE"),
])
def test_a_bad_param_is_one_line_exit_2_before_anything_is_touched(arrivy, tmp_path, args, message):
    target = f"sqlite:///{tmp_path / 'never.db'}"
    res = CliRunner().invoke(main, ["run", str(SPECS), "--target", target, *args], env=env_for(arrivy))
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --param") and message in lines[0], res.output
    assert not arrivy.log and not (tmp_path / "never.db").exists()


def test_plan_and_dry_run_show_and_use_the_params(arrivy, pg_url):
    res = CliRunner().invoke(main, ["plan", str(SPECS / "bookings.yaml"), "--target", pg_url,
                                    "--param", "booking_status=CONFIRMED,CANCELLED"],
                             env=env_for(arrivy))
    assert res.exit_code == 0, res.output
    assert "booking_status = CONFIRMED,CANCELLED (list; narrows the fetch: no delete sweep)" in res.output
    assert "from_date = (none) (date; default)" in res.output
    assert "status=CONFIRMED%2CCANCELLED" in res.output
    res = run_cli(arrivy, pg_url, "--dry-run", "--param", "from_date=2025-04-01", path=SPECS / "bookings.yaml")
    assert res.exit_code == 0, res.output
    sent = [r.query["from"] for r in arrivy.log if r.path == "/api/bookings"]
    assert sent and all(f == ["2025-04-01T00:00:00+00:00"] for f in sent)
    later = sum(1 for b in arrivy.store["bookings"].values() if b["_start"] >= utc(2025, 4, 1))
    line, = [x for x in res.output.splitlines() if x.startswith("arrivy.bookings ")]
    assert line.split()[2:4] == [str(later), str(later)]  # fetched, created (nothing written)
    assert later < 640 and "deletes: not swept: --dry-run" in res.output


def test_lint_names_file_line_and_key_of_a_bad_default_or_choice(tmp_path):
    text = (SPECS / "bookings.yaml").read_text()
    bad = text.replace("    default: []\n    choices: [REQUESTED, CONFIRMED, CANCELLED]",
                       "    default: [PENDING]\n    choices: [REQUESTED, CONFIRMED, CANCELLED]")
    bad = bad.replace("    type: date\n", "    type: date\n    default: tomorrow\n")
    spec = tmp_path / "bookings.yaml"
    spec.write_text(bad)
    res = CliRunner().invoke(main, ["lint", str(spec)])
    assert res.exit_code == 1
    assert f"{spec}:11: params.booking_status.default: default 'PENDING' is not one of REQUESTED, " \
           f"CONFIRMED, CANCELLED" in res.output
    assert f"{spec}:16: params.from_date.default: default 'tomorrow' is not a date (YYYY-MM-DD)" in res.output
    spec.write_text(text.replace("choices: [REQUESTED, CONFIRMED, CANCELLED]", "choices: 7"))
    assert f"{spec}:12: params.booking_status.choices: expected array" in \
        CliRunner().invoke(main, ["lint", str(spec)]).output


def test_lint_checks_for_each_and_parent(tmp_path):
    text = (SPECS / "task_statuses.yaml").read_text()
    spec = tmp_path / "s.yaml"
    spec.write_text(text.replace("      records: \"@\"\n      pagination", "      pagination"))
    assert "source.for_each.1: records is missing" in CliRunner().invoke(main, ["lint", str(spec)]).output
    spec.write_text(text.replace("  for_each:\n    - items", "  unused:\n    - items"))
    out = CliRunner().invoke(main, ["lint", str(spec)]).output
    assert "unknown key 'unused'" in out
    tasks = (SPECS / "tasks.yaml").read_text().replace(
        "  for_each:\n    - items: [{unscheduled: false}, {unscheduled: true}]\n", "")
    spec.write_text(tasks)
    assert "source.request: templates use parent, which only for_each defines" in \
        CliRunner().invoke(main, ["lint", str(spec)]).output


# -- errors: bad token, storms -------------------------------------------------------------------------
def test_bad_token_fails_clearly_writes_nothing_and_prints_no_secret(arrivy, pg_url, caplog):
    wrong = "tok-WRONG-0123456789"
    caplog.set_level(logging.DEBUG)
    res = run_cli(arrivy, pg_url, "--debug", path=SPECS / "groups.yaml", token=wrong)
    assert res.exit_code == 1
    runs = history(pg_url)
    assert [r.status for r in runs] == ["failed"]
    assert "401" in runs[0].error_message and "ARRIVY_AUTH_KEY" in runs[0].error_message
    everything = res.output + caplog.text + runs[0].error_message + json.dumps(as_json(runs[0].configuration))
    assert wrong not in everything and KEY not in everything
    assert rows(pg_url, "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'arrivy_groups'")[0][0] == 0


@pytest.mark.parametrize("status", [429, 503])
def test_a_storm_of_429_or_5xx_is_ridden_out_nothing_lost(arrivy, pg_url, status):
    arrivy.inject(status, count=3, path_contains="/api/tasks")
    res = run_cli(arrivy, pg_url, "--only", "tasks", "--only", "bookings")
    assert res.exit_code == 0, res.output
    got = landed_tables(pg_url, ("tasks", "bookings"))
    want = upstream(arrivy)
    assert got == {"tasks": set(want["tasks"]), "bookings": set(want["bookings"])}
    assert as_json(last_runs(pg_url)["tasks"].performance_metrics)["retries"] == 3
    if status == 429:
        assert arrivy.counters.throttled == 3
    else:
        assert arrivy.counters.injected_errors == 3


def landed_tables(target: str, entities: tuple[str, ...]) -> dict[str, set[int]]:
    return {e: {r[0] for r in rows(target, f"SELECT id FROM {TABLES[e]}")} for e in entities}


# -- for_each: a killed run resumes at the parent it was on ------------------------------------------------
def test_a_killed_status_history_run_resumes_at_its_parent_without_loss(arrivy, pg_url):
    env = dict(os.environ, **env_for(arrivy, rate="150"))
    proc = cli_start("run", SPECS / "task_statuses.yaml", "--target", pg_url, "--no-progress", env=env)
    deadline = time.monotonic() + 120
    while sum(1 for r in arrivy.log if r.path.endswith("/status")) < 700 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    cp = as_json(history(pg_url)[-1].checkpoint)
    done_before = cp["position"]["parent_index"]
    assert 100 < done_before < 1203 and cp["position"]["parent"]["task_id"] in arrivy.store["tasks"]
    arrivy.reset_log()
    res = cli("run", SPECS / "task_statuses.yaml", "--target", pg_url, "--no-progress", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"resuming at parent {done_before + 1}" in res.stderr
    assert sum(1 for r in arrivy.log if r.path.endswith("/status")) == 1203 - done_before
    assert landed(pg_url, ("task_statuses",))["task_statuses"] == upstream(arrivy)["task_statuses"]
    assert [r.status for r in history(pg_url)] == ["failed", "success"]


def test_a_narrowed_run_neither_sets_the_next_delta_window_nor_is_resumed_by_other_values(arrivy, pg_url, tmp_path):
    """Generic: a spec with a cursor. The run made with a narrowing --param is recorded, but the
    next run's delta window starts from the last un-narrowed run's watermark."""
    spec = tmp_path / "bookings.yaml"
    spec.write_text((SPECS / "bookings.yaml").read_text()
                    .replace("  key: id\n", "  key: id\n  cursor: start_datetime\n  serves_stale_copies: false\n")
                    .replace("deletes: {mode: sweep, action: soft, max_delete_fraction: 0.2}\n", ""))
    assert run_cli(arrivy, pg_url, path=spec).exit_code == 0
    arrivy.add("bookings", **arrivy._booking(999, utc(2031, 1, 1)))  # past the watermark, CONFIRMED or not
    res = run_cli(arrivy, pg_url, "--param", "booking_status=CANCELLED", path=spec)
    assert res.exit_code == 0, res.output
    res = run_cli(arrivy, pg_url, path=spec)
    assert res.exit_code == 0, res.output
    first, narrowed, third = history(pg_url)
    assert as_json(narrowed.configuration)["narrowed_by"] == ["booking_status=CANCELLED"]
    assert f"SyncHistory run {first.id} " in as_json(third.configuration)["window_reason"]
    assert as_json(third.configuration)["window"]["params"] == {"booking_status": [], "from_date": None}
    assert rows(pg_url, "SELECT COUNT(DISTINCT id) FROM arrivy_bookings")[0][0] == 641
    assert third.records_processed == 2  # the new booking and the one at the first run's watermark


def test_date_arithmetic_and_from_json_in_the_sandbox():
    import datetime as dt

    from syncrunner.core.templating import ENV, compile_expression, expression_problems, template_problems

    since = dt.datetime(2025, 3, 1, 8, tzinfo=dt.timezone.utc)
    assert ENV.from_string("{{ s | minus_days(7) | iso }}").render(s=since) == "2025-02-22T08:00:00+00:00"
    assert ENV.from_string("{{ s | add_days(1.5) | iso }}").render(s=since) == "2025-03-02T20:00:00+00:00"
    assert ENV.from_string("{{ '2025-03-01' | add_days(-1) }}").render() == "2025-02-28"
    assert ENV.from_string("{{ none | add_days(3) }}").render() == "None"
    ago = compile_expression("days_ago(2)")()
    assert abs((dt.datetime.now(dt.timezone.utc) - ago) - dt.timedelta(days=2)) < dt.timedelta(seconds=5)
    assert compile_expression("(extra | from_json)['notes']")(extra='{"notes": "gate code 42"}') == "gate code 42"
    assert compile_expression("extra | from_json")(extra="") is None
    with pytest.raises(ValueError):
        compile_expression("extra | from_json")(extra='{"cut')
    assert template_problems("{{ params.x | add_days(1) }}") == []
    assert expression_problems("(x | from_json).__class__") != []  # still the sandbox
    with pytest.raises(ValueError):
        compile_expression("s | add_days(10 ** 9)")(s=since)


def test_a_task_deleted_after_it_was_listed_is_skipped_not_fatal(arrivy, pg_url):
    """The status request of a task deleted since the listing answers 404 (skip_parent_on)."""
    scheduled = sorted((t for t in arrivy.store["tasks"].values() if not t["unscheduled"]),
                       key=lambda t: (t["_start"], t["id"]))
    doomed = scheduled[1060]["id"]  # on the last page of the listing: no later page shifts (see the trap below)
    calls = []

    def hook(kind: str, page: int) -> None:  # after the listing page holding it was read (500 a page)
        calls.append(kind)
        if calls.count("status") == 1030:
            arrivy.delete("tasks", [doomed])
    arrivy.page_hook = hook
    res = run_cli(arrivy, pg_url, path=SPECS / "task_statuses.yaml")
    assert res.exit_code == 0, res.output
    assert f"is gone (HTTP 404): skipped" in res.output
    run = history(pg_url)[-1]
    assert as_json(run.performance_metrics)["parents_gone"] == 1
    assert landed(pg_url, ("task_statuses",))["task_statuses"] == upstream(arrivy)["task_statuses"]


def test_known_trap_a_task_rescheduled_between_pages_is_missed_by_that_run_only(arrivy, pg_url):
    """Arrivy pages by page number over tasks ordered by start time: a task moved from page 1 to
    the end while the run reads page 2 shifts the rest one place, and the task at the old page
    boundary is not read by that run. A full run's sweep then marks it deleted; the next run
    reads it and un-deletes it (docs/crm/arrivy.md)."""
    assert run_cli(arrivy, pg_url, path=SPECS / "tasks.yaml").exit_code == 0
    ordered = sorted((t for t in arrivy.store["tasks"].values() if not t["unscheduled"]),
                     key=lambda t: (t["_start"], t["id"]))
    moved, boundary = ordered[0]["id"], ordered[500]["id"]
    arrivy.page_hook = lambda kind, page: kind == "tasks" and page == 2 and \
        arrivy.change("tasks", [moved], _start=utc(2030, 1, 1))
    assert run_cli(arrivy, pg_url, path=SPECS / "tasks.yaml").exit_code == 0
    assert as_json(history(pg_url)[-1].performance_metrics)["records_deleted"] == 1
    assert rows(pg_url, "SELECT id FROM arrivy_tasks WHERE deleted_at IS NOT NULL") == [(boundary,)]
    arrivy.page_hook = None
    assert run_cli(arrivy, pg_url, path=SPECS / "tasks.yaml").exit_code == 0
    assert rows(pg_url, "SELECT COUNT(*) FROM arrivy_tasks WHERE deleted_at IS NOT NULL")[0][0] == 0
    assert landed(pg_url, ("tasks",))["tasks"] == upstream(arrivy)["tasks"]


def test_for_each_resume_continues_at_its_parent_only_while_it_is_at_its_place(caplog):
    from syncrunner.sources.http.foreach import ForEach

    fe = ForEach([{"items": [{"a": 1}, {"a": 2}]}, {"items": [{"b": "x"}, {"b": "y"}]}], "http://h", "t.e")
    everything = list(fe.resumed(None, lambda p: {}, None))
    assert everything == [(0, {"a": 1, "b": "x"}), (1, {"a": 1, "b": "y"}), (2, {"a": 2, "b": "x"}),
                          (3, {"a": 2, "b": "y"})]
    caplog.set_level(logging.INFO)
    assert list(fe.resumed(None, lambda p: {}, {"parent_index": 2, "parent": {"a": 2, "b": "x"}})) == everything[2:]
    assert "resuming at parent 3 (a=2, b=x)" in caplog.text
    moved = {"parent_index": 2, "parent": {"a": 9, "b": "x"}}  # the listing changed since the checkpoint
    assert list(fe.resumed(None, lambda p: {}, moved)) == everything
    assert "no longer at its place: starting from the first parent" in caplog.text


# -- page concurrency (the notes' --concurrent-pages 4) ------------------------------------------------
@pytest.fixture
def pg_url2():
    from tests.conftest import PG_SERVER, _database
    yield from _database(f"{PG_SERVER}/postgres", 'CREATE DATABASE "{name}"',
                         'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f"{PG_SERVER}/{{name}}")


def snapshot(target: str) -> dict[str, list[tuple]]:
    return {t: [tuple(r) for r in rows(target, f"SELECT id, title, status, start_datetime, start_local "
                                                f"FROM arrivy_{t} ORDER BY id")]
            for t in ("tasks", "bookings")}


def test_four_pages_at_once_land_what_the_sequential_run_lands(pg_url, pg_url2):
    with FakeArrivy(auth_key=KEY, auth_token=TOKEN) as fake:
        fake.seed(T0, tasks=6000, bookings=2600, unscheduled_every=7, statuses_per_task=1)
        fake.faults.latency_seconds = 0.05
        only = ["--only", "tasks", "--only", "bookings"]
        env = env_for(fake)
        seq = CliRunner().invoke(main, ["run", str(SPECS), "--target", pg_url, "--no-progress", *only], env=env)
        assert seq.exit_code == 0, seq.output
        assert fake.counters.max_in_flight == 1
        fake.counters.max_in_flight = 0
        par = CliRunner().invoke(main, ["run", str(SPECS), "--target", pg_url2, "--no-progress", *only],
                                 env={**env, "ARRIVY_CONCURRENT_PAGES": "4"})
        assert par.exit_code == 0, par.output
        assert fake.counters.max_in_flight == 4
        assert snapshot(pg_url2) == snapshot(pg_url)
        assert {k: len(v) for k, v in snapshot(pg_url).items()} == {"tasks": 6000, "bookings": 2600}
        metrics = as_json(last_runs(pg_url2)["tasks"].performance_metrics)
        assert metrics["page_concurrency"] == 4 and metrics["pages"] == 13  # 11 + 2 pages, both queries


def test_a_run_killed_while_fetching_four_pages_at_once_resumes_without_loss(pg_url):
    with FakeArrivy(auth_key=KEY, auth_token=TOKEN) as fake:
        fake.seed(T0, tasks=20000, unscheduled_every=0, statuses_per_task=1)
        fake.faults.latency_seconds = 0.5  # 40 pages, 4 at a time: about 5 s
        env = dict(os.environ, **env_for(fake), ARRIVY_CONCURRENT_PAGES="4")
        proc = cli_start("run", SPECS / "tasks.yaml", "--target", pg_url, "--no-progress", env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not _table_rows(pg_url) or _table_rows(pg_url) < 2000):
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        partial = _table_rows(pg_url)
        assert 2000 <= partial < 20000  # killed mid-run, some chunks committed
        assert history(pg_url)[-1].status == "running"
        res = cli("run", SPECS / "tasks.yaml", "--target", pg_url, "--no-progress", env=env)
        assert res.returncode == 0, res.stdout + res.stderr
        assert [r.status for r in history(pg_url)] == ["failed", "success"]
        assert history(pg_url)[-1].records_created == 20000 - partial  # the rest, nothing twice
        assert landed(pg_url, ("tasks",))["tasks"] == upstream(fake)["tasks"]
        assert "resuming at parent 1" in res.stderr


def _table_rows(target: str) -> int:
    try:
        return rows(target, "SELECT COUNT(*) FROM arrivy_tasks")[0][0]
    except Exception:  # noqa: BLE001 - the table is created once the source has answered
        return 0
