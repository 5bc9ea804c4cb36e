"""Issue 4: one run per entity and a cluster-wide run limit, held in the target database, with real
`syncrunner run` processes; heartbeat and the stale-run sweep."""
from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest

from syncrunner.cli import EXIT_LOCKED
from syncrunner.dburl import create_engine
from syncrunner.runtime import history as h
from syncrunner.runtime.locks import RunGuard
from syncrunner.runtime.target import make_engine
from tests.helpers import cli, cli_env, cli_start, history, make_source, rows, sync, write_spec


def _finish(procs, timeout=180):
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=timeout)
        out.append((p.returncode, text))
    return out


def test_two_runs_of_one_spec_started_together_one_syncs_the_other_exits(tmp_path, mysql_url, target_url):
    make_source(mysql_url, 40000)
    spec = write_spec(tmp_path, chunk_size=500, batch_size=500)
    env = cli_env(mysql_url, target_url)
    results = _finish([cli_start("run", spec, env=env) for _ in range(2)])
    codes = sorted(code for code, _ in results)
    assert codes == [0, EXIT_LOCKED], results
    loser = next(text for code, text in results if code == EXIT_LOCKED)
    assert "already running" in loser
    runs = history(target_url)
    assert len(runs) == 1 and runs[0].status == "success" and runs[0].records_created == 40000


def test_two_runs_of_one_spec_with_wait_run_one_after_the_other(tmp_path, mysql_url, target_url):
    make_source(mysql_url, 40000)
    spec = write_spec(tmp_path, chunk_size=500, batch_size=500)
    env = cli_env(mysql_url, target_url)
    results = _finish([cli_start("run", spec, "--wait", 120, env=env) for _ in range(2)])
    assert [code for code, _ in results] == [0, 0], results
    first, second = history(target_url)
    assert first.status == second.status == "success"
    assert second.start_time >= first.end_time  # never overlapped
    assert (first.records_created, second.records_created) == (40000, 0)


def test_already_running_names_start_pid_and_host(tmp_path, mysql_url, sqlite_url):
    """A run stuck between chunks holds the lock; a second one says who holds it."""
    import threading
    make_source(mysql_url, 3000)
    spec = write_spec(tmp_path)
    release, entered = threading.Event(), threading.Event()

    class Hold:
        def started(self, *a): pass
        def finished(self, *a): pass
        def chunk_done(self, spec, chunk_no, stats):
            entered.set()
            release.wait(30)

    t = threading.Thread(target=sync, args=(spec, mysql_url, sqlite_url), kwargs={"observers": [Hold()]})
    t.start()
    try:
        assert entered.wait(30)
        res = cli("run", spec, env=cli_env(mysql_url, sqlite_url))
        assert res.returncode == EXIT_LOCKED
        import os, socket
        assert "already running since" in res.stderr + res.stdout
        assert f"pid {os.getpid()}, host {socket.gethostname()}" in res.stderr + res.stdout
    finally:
        release.set()
        t.join()


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "sqlite"])
def test_five_specs_with_limit_two_never_run_more_than_two_at_once(tmp_path, mysql_url, backend, request):
    target = request.getfixturevalue({"postgresql": "pg_url", "mysql": "mysql_target_url",
                                      "sqlite": "sqlite_url"}[backend])
    make_source(mysql_url, 15000)
    specs = [write_spec(tmp_path, chunk_size=500, batch_size=500, entity=f"items{i}", name=f"items{i}.yaml")
             for i in range(5)]
    env = cli_env(mysql_url, target, SYNCRUNNER_MAX_CONCURRENT=2)
    results = _finish([cli_start("run", s, env=env) for s in specs])
    assert [code for code, _ in results] == [0] * 5, results
    runs = history(target)
    assert len(runs) == 5 and {r.status for r in runs} == {"success"}
    events = sorted([(r.start_time, 1) for r in runs] + [(r.end_time, -1) for r in runs],
                    key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    running, peak = 0, 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    assert peak == 2, [(r.sync_type, r.start_time, r.end_time) for r in runs]


def test_a_run_waits_for_a_free_slot_and_says_so(tmp_path, mysql_url, sqlite_url):
    """Both slots held by other runs: a third run logs that it waits, then runs when one frees."""
    make_source(mysql_url, 100)
    spec = write_spec(tmp_path)
    engine = make_engine(sqlite_url)
    holders = [RunGuard(engine, "other", f"e{i}", max_concurrent=2) for i in range(2)]
    for g in holders:
        g.acquire(0)
    proc = cli_start("run", spec, env=cli_env(mysql_url, sqlite_url, SYNCRUNNER_MAX_CONCURRENT=2))
    lines: list[str] = []
    waiting = threading.Event()

    def read() -> None:  # the run's output, as it comes: no guess at how long start-up takes
        for line in proc.stdout:
            lines.append(line)
            if "waiting for a free run slot (limit 2)" in line:
                waiting.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120  # it says so after 1 s without a slot
        while not waiting.wait(0.2) and reader.is_alive() and time.monotonic() < deadline:
            pass
        assert waiting.is_set(), "".join(lines)
        assert proc.poll() is None  # still waiting: no slot
    finally:
        holders[0].release()
    code = proc.wait(180)
    reader.join(10)
    holders[1].release()
    engine.dispose()
    assert code == 0, "".join(lines)
    assert history(sqlite_url)[-1].status == "success"


def test_heartbeat_stamps_a_running_sync_with_its_peak_memory(tmp_path, mysql_url, pg_url):
    make_source(mysql_url, 3000)
    seen = []

    class Slow:
        def started(self, *a): pass
        def finished(self, *a): pass
        def chunk_done(self, spec, chunk_no, stats):
            time.sleep(0.5)
            r = history(pg_url)[-1]
            seen.append((r.heartbeat_at, r.performance_metrics))

    spec = write_spec(tmp_path)
    from syncrunner.runtime.engine import run_spec
    from syncrunner.runtime.strategy import RunOptions
    from syncrunner.spec.load import load_spec
    result = run_spec(load_spec(spec, {"ITEM_DB_URL": mysql_url}), RunOptions(), pg_url,
                      observers=[Slow()], heartbeat_seconds=0.1)
    assert result.status == "success"
    beats = [m for _, m in seen if m and "peak_memory_mb" in m]
    assert beats and all(m["peak_memory_mb"] > 10 for m in beats)
    stamps = [t for t, _ in seen]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_sweep_marks_only_dead_stale_runs_failed(tmp_path, pg_url):
    engine = make_engine(pg_url)
    old = h.utcnow() - dt.timedelta(minutes=30)
    with engine.begin() as c:
        h.ensure_tables(c)
        ids = {}
        for entity in ("dead", "alive", "fresh"):
            ids[entity] = h.start_run(c, "testcrm", entity, {"pid": 1, "host": "elsewhere"})
            c.execute(h.sync_history.update().where(h.sync_history.c.id == ids[entity]).values(
                heartbeat_at=h.utcnow() if entity == "fresh" else old))
    alive = RunGuard(engine, "testcrm", "alive", max_concurrent=0)  # a hung process holding its lock
    alive.acquire(0)
    try:
        res = cli("sweep", "--stale-after", "10m", "--target", pg_url, env=cli_env("", pg_url))
    finally:
        alive.release()
    assert res.returncode == 0, res.stderr
    assert "1 run(s) swept, 1 stale but alive" in res.stdout
    status = {r.sync_type: (r.status, r.error_message) for r in history(pg_url)}
    assert status["dead"][0] == "failed" and status["dead"][1].startswith("heartbeat lost")
    assert status["alive"] == ("running", None)
    assert status["fresh"] == ("running", None)
    engine.dispose()


def test_a_run_swept_as_dead_commits_no_further_chunk(tmp_path, mysql_url, target_url):
    """If a sweeper declares a run dead (say its lock session vanished), the run's next chunk
    transaction rolls back instead of writing behind its successor."""
    make_source(mysql_url, 5000, same_ts=True)
    engine = make_engine(target_url)

    class SweptAfter2:
        def started(self, *a): pass
        def finished(self, *a): pass
        def chunk_done(self, spec, chunk_no, stats):
            if chunk_no == 2:
                with engine.begin() as c:
                    h.mark_dead(c, h.running_runs(c, "testcrm", "items")[0], "test")

    result = sync(write_spec(tmp_path), mysql_url, target_url, observers=[SweptAfter2()])
    engine.dispose()
    assert result.status == "failed" and "no longer running" in result.error
    run = history(target_url)[-1]
    assert run.error_message.startswith("heartbeat lost") and run.records_created == 2000
    assert rows(target_url, "SELECT COUNT(*) FROM items")[0][0] == 2000
