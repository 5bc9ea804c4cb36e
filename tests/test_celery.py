"""Issue 26: specs run on Celery workers (syncrunner.celery) under the target database's locks and
run-slot limit. Real Redis (127.0.0.1:6379), real `celery worker` subprocesses, a real MariaDB
source and PostgreSQL target. Each test has its own queue name, so tests running at the same
time never take each other's tasks."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("celery")

from tests.helpers import cli, cli_env, history, make_source, write_spec  # noqa: E402
from tests.test_crash import _json, _source, _target, history_or_empty  # noqa: E402

BROKER = os.environ.get("SYNCRUNNER_TEST_REDIS", "redis://127.0.0.1:6379/0")
CELERY = str(Path(sys.executable).with_name("celery"))


QUEUES: list[str] = []


@pytest.fixture(autouse=True)
def _drop_queues():
    """A test's queue (tasks no worker took) is deleted from Redis after it."""
    yield
    import redis
    client = redis.Redis.from_url(BROKER)
    while QUEUES:
        client.delete(QUEUES.pop())
    client.close()


def _env(source_url: str, target_url: str, **extra) -> dict:
    QUEUES.append(f"sr-test-{uuid.uuid4().hex[:10]}")
    settings = dict(SYNCRUNNER_BROKER_URL=BROKER, SYNCRUNNER_QUEUE=QUEUES[-1],
                    SYNCRUNNER_MAP_WORKERS="0", SYNCRUNNER_HEARTBEAT_SECONDS="1")
    return cli_env(source_url, target_url, **(settings | extra))


class Workers:
    """`celery -A syncrunner.celery worker` processes, each in its own process group (so a
    SIGKILL takes its pool children too); stopped at the end of the test."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, env: dict, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        proc = subprocess.Popen([CELERY, "-A", "syncrunner.celery", "worker", "-Q", env["SYNCRUNNER_QUEUE"],
                                 "-n", f"{name}@%h", "--without-mingle", "--without-gossip", "-l", "info", *args],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)

    def stop(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill(name)


@pytest.fixture
def workers(tmp_path):
    w = Workers(tmp_path)
    yield w
    w.stop()


def _wait(predicate, timeout: float, what: str, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _max_overlap(runs) -> int:
    """The most runs that were running at one instant, from their SyncHistory start and end."""
    events = sorted([(r.start_time, 1) for r in runs] + [(r.end_time, -1) for r in runs],
                    key=lambda e: (e[0], e[1]))  # an end at the same instant as a start comes first
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def _six_specs(tmp_path: Path) -> list[Path]:
    return [write_spec(tmp_path, chunk_size=500, batch_size=500, name=f"items{i}.yaml",
                       entity=f"items{i}", table=f"items{i}") for i in range(6)]


def test_six_specs_on_two_workers_run_two_at_a_time_and_are_seen_queued_first(tmp_path, mysql_url, pg_url,
                                                                               workers):
    n = 20000
    make_source(mysql_url, n)
    specs = _six_specs(tmp_path)
    env = _env(mysql_url, pg_url, SYNCRUNNER_MAX_CONCURRENT="2")

    queued = cli("enqueue", *specs, env=env)
    assert queued.returncode == 0, queued.stdout + queued.stderr
    assert "6 run(s) queued" in queued.stdout
    # before any worker runs: six queued rows, shown by history and health as waiting work
    waiting = json.loads(cli("history", "--status", "queued", "--json", env=env).stdout)
    assert sorted(r["entity"] for r in waiting) == [f"items{i}" for i in range(6)]
    health = json.loads(cli("health", "--json", env=env).stdout)
    assert [(s["source"], s["queued"], s["failed"]) for s in health["sources"]] == \
        [(f"testcrm.items{i}", 1, 0) for i in range(6)]
    queued_ids = {r["id"] for r in waiting}

    # two workers of two processes each: four could run at once, the limit lets two
    workers.start("w1", env, "-c", "2")
    workers.start("w2", env, "-c", "2")
    runs = _wait(lambda: (lambda h: h if len(h) == 6 and all(r.status not in ("queued", "running") for r in h)
                          else None)(history(pg_url)), 240, "six finished runs")

    assert [r.status for r in runs] == ["success"] * 6, [(r.sync_type, r.status, r.error_message) for r in runs]
    assert all(r.records_created == n for r in runs)
    assert _max_overlap(runs) == 2  # the slots were all used, and never more
    hosts = {(_json(r.configuration)["host"], _json(r.configuration)["pid"]) for r in runs}
    assert len(hosts) >= 2  # more than one worker process ran syncs
    # each run replaced its queued row: one row per run, linked to the queued one
    links = [_json(r.configuration)["queued"] for r in runs]
    assert {q["run_id"] for q in links} == queued_ids
    assert all(dt.datetime.fromisoformat(q["queued_at"]) <= r.start_time for q, r in zip(links, runs))


def test_a_worker_killed_mid_sync_its_task_resumes_on_the_other_worker(tmp_path, mysql_url, pg_url, workers):
    n = 60000
    make_source(mysql_url, n)
    spec = write_spec(tmp_path, chunk_size=500, batch_size=500)
    # Redis hands an unacknowledged task to another worker after the visibility timeout: short here
    env = _env(mysql_url, pg_url, SYNCRUNNER_VISIBILITY_TIMEOUT="8")
    assert cli("enqueue", spec, env=env).returncode == 0
    for name in ("a", "b"):
        workers.start(name, env, "--pool", "solo")

    first = _wait(lambda: next((r for r in history_or_empty(pg_url)
                                if r.status == "running" and r.records_processed >= 5000), None),
                  120, "a run with 5,000 records")
    holder = next(name for name, p in workers.procs.items() if p.pid == _json(first.configuration)["pid"])
    workers.kill(holder)
    other = "b" if holder == "a" else "a"

    runs = _wait(lambda: (lambda h: h if len(h) == 2 and h[-1].status == "success" else None)(history(pg_url)),
                 180, "the redelivered run to succeed")
    dead, resumed = runs
    assert dead.id == first.id and dead.status == "failed" and "heartbeat lost" in dead.error_message
    assert 5000 <= dead.records_processed < n
    config = _json(resumed.configuration)
    assert config["pid"] == workers.procs[other].pid and config["resumed_from"] == dead.id
    assert resumed.records_processed == n - dead.records_processed  # from the checkpoint on
    assert _target(pg_url) == _source(mysql_url)
    assert f"Task syncrunner.run[{_json(first.configuration)['queued']['task_id']}] received" in workers.log(other)


def test_a_spec_gated_off_where_the_worker_runs_is_recorded_skipped(tmp_path, mysql_url, pg_url, workers):
    make_source(mysql_url, 10)
    spec = write_spec(tmp_path, extra="enabled: ${ENABLE_ITEMS:-true}\n")
    env = _env(mysql_url, pg_url)
    assert cli("enqueue", spec, env=env).returncode == 0  # the enqueuer's environment leaves it on
    workers.start("w", dict(env, ENABLE_ITEMS="false"), "--pool", "solo")
    runs = _wait(lambda: (lambda h: h if h and h[0].status != "queued" else None)(history(pg_url)), 60,
                 "the queued run to be settled")
    assert [(r.status, r.error_message) for r in runs] == [("skipped", "disabled by its spec's enabled flag")]
    assert cli("history", "--json", env=env).returncode == 0
    from tests.helpers import rows
    assert not rows(pg_url, "SELECT table_name FROM information_schema.tables WHERE table_name = 'items'")


def test_broker_down_at_enqueue_is_one_line_and_queues_nothing(tmp_path, mysql_url, pg_url):
    make_source(mysql_url, 10)
    spec = write_spec(tmp_path)
    env = _env(mysql_url, pg_url, SYNCRUNNER_BROKER_URL="redis://127.0.0.1:1/0")
    res = cli("enqueue", spec, env=env)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "error: broker unreachable (redis://127.0.0.1:1/0): OperationalError: Error 111 connecting to "
        "127.0.0.1:1. Connection refused."]
    assert history_or_empty(pg_url) == []


def test_celery_beat_queues_the_scheduled_specs_and_a_worker_runs_them(tmp_path, mysql_url, pg_url, workers):
    """`celery -A syncrunner.celery beat` with a schedules.yaml due every minute: at the next minute
    beat sends syncrunner.enqueue, a worker records the spec `queued` and sends its run."""
    make_source(mysql_url, 100)
    (tmp_path / "specs").mkdir()
    write_spec(tmp_path / "specs")
    (tmp_path / "schedules.yaml").write_text(
        "schedules:\n  - {name: items-every-minute, run: specs/, cron: '* * * * *', flags: {full: true}}\n")
    env = _env(mysql_url, pg_url, SYNCRUNNER_SCHEDULES=str(tmp_path / "schedules.yaml"))
    workers.start("w", env, "--pool", "solo")
    beat_log = open(tmp_path / "beat.log", "w")
    beat = subprocess.Popen([CELERY, "-A", "syncrunner.celery", "beat", "-s", str(tmp_path / "beat-schedule"),
                             "-l", "info"], env=env, stdout=beat_log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        runs = _wait(lambda: (lambda h: h if h and h[0].status == "success" else None)(history_or_empty(pg_url)),
                     150, "the scheduled run")
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(timeout=30)
    config = _json(runs[0].configuration)
    assert runs[0].records_created == 100 and config["flags"]["full"] is True
    assert config["queued"]["run_id"] and config["queued"]["queued_at"]  # it was queued first
    assert "Scheduler: Sending due task items-every-minute (syncrunner.enqueue)" in \
        (tmp_path / "beat.log").read_text()


def test_a_queued_run_whose_task_expired_is_swept_failed(tmp_path, mysql_url, pg_url):
    make_source(mysql_url, 10)
    spec = write_spec(tmp_path)
    env = _env(mysql_url, pg_url)
    assert cli("enqueue", spec, "--expires", "1s", env=env).returncode == 0  # no worker takes it
    time.sleep(1.5)
    health = json.loads(cli("health", "--json", env=env).stdout)
    assert [(s["queued"], s["failed"]) for s in health["sources"]] == [(0, 1)]  # past its expiry
    res = cli("sweep", env=env)
    assert res.returncode == 0 and "1 run(s) swept" in res.stdout
    assert "failed (its task expired before it started)" in res.stdout
    (run,) = history(pg_url)
    assert run.status == "failed" and run.error_message.startswith("queued task vanished: not started before")


def test_an_unreachable_target_is_retried_by_celery_and_the_run_then_succeeds(tmp_path, mysql_url, pg_url,
                                                                              workers):
    """The one kind of failure Celery retries: the target refuses connections when the task
    starts (here: ALLOW_CONNECTIONS false); once it is back, the retry runs the spec."""
    import sqlalchemy as sa
    make_source(mysql_url, 50)
    spec = write_spec(tmp_path)
    env = _env(mysql_url, pg_url)
    assert cli("enqueue", spec, env=env).returncode == 0
    name = sa.engine.make_url(pg_url).database
    admin = sa.create_engine(pg_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        c.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
    try:
        workers.start("w", env, "--pool", "solo")
        _wait(lambda: "Retry in" in workers.log("w"), 60, "Celery to schedule a retry")
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
    runs = _wait(lambda: (lambda h: h if h[0].status == "success" else None)(history(pg_url)), 120,
                 "the retried run")
    assert [r.status for r in runs] == ["success"] and runs[0].records_created == 50
    assert "target unreachable" in workers.log("w")


def test_a_folder_is_one_task_run_in_after_order_and_a_busy_entity_is_recorded_skipped(tmp_path, mysql_url,
                                                                                       pg_url, workers):
    """A folder is one task: its specs run in `after:` order, each replacing its own queued row. An
    entity whose lock is held elsewhere (a run on another machine) is recorded `skipped`, not run."""
    from syncrunner.dburl import create_engine
    from syncrunner.runtime.locks import RunGuard
    make_source(mysql_url, 30)
    folder = tmp_path / "specs"
    folder.mkdir()
    write_spec(folder, name="a.yaml", entity="first", extra="after: [second]\n")
    write_spec(folder, name="b.yaml", entity="second")
    write_spec(folder, name="c.yaml", entity="busy")
    env = _env(mysql_url, pg_url)
    queued = cli("enqueue", folder, env=env)
    assert queued.returncode == 0 and "3 run(s) queued" in queued.stdout, queued.stdout + queued.stderr
    assert len({line.split("(task ")[1] for line in queued.stdout.splitlines() if "(task " in line}) == 1

    engine = create_engine(pg_url)
    guard = RunGuard(engine, "testcrm", "busy", max_concurrent=0)
    guard.acquire(0)
    try:
        workers.start("w", env, "--pool", "solo")
        runs = _wait(lambda: (lambda h: h if all(r.status not in ("queued", "running") for r in h) else None)(
            history(pg_url)), 120, "the folder's runs")
    finally:
        guard.release()
        engine.dispose()
    by_entity = {r.sync_type: r for r in runs}
    assert len(runs) == 3
    assert (by_entity["second"].status, by_entity["first"].status) == ("success", "success")
    assert by_entity["second"].end_time <= by_entity["first"].start_time  # after: second first
    busy = by_entity["busy"]
    assert busy.status == "skipped" and busy.error_message.startswith("not started: already running")


def test_data_errors_and_a_failed_source_end_in_sync_history_not_in_celery_retries(tmp_path, mysql_url, pg_url,
                                                                                    workers):
    """Celery retries only an unreachable target or broker: bad records (a `partial` run) and a
    source that refuses the connection (a `failed` run) are each one SyncHistory row, and their
    tasks succeed with the run summary instead of being retried."""
    import sqlalchemy as sa
    engine = make_source(mysql_url, 40)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE item SET email = 'not-an-email' WHERE id IN (3, 7)"))
    engine.dispose()
    bad = write_spec(tmp_path, name="bad.yaml", entity="bad_records", table="bad_records")
    down = write_spec(tmp_path, name="down.yaml", entity="source_down", table="source_down")
    down.write_text(down.read_text().replace("${ITEM_DB_URL}", "mysql+pymysql://root@127.0.0.1:1/nowhere"))
    env = _env(mysql_url, pg_url)
    queued = cli("enqueue", bad, down, env=env)
    assert queued.returncode == 0 and "2 run(s) queued" in queued.stdout, queued.stdout + queued.stderr
    workers.start("w", env, "--pool", "solo")
    runs = _wait(lambda: (lambda h: h if len(h) == 2 and all(r.status not in ("queued", "running") for r in h)
                          else None)(history(pg_url)), 120, "both runs to end")
    by_entity = {r.sync_type: r for r in runs}
    assert (by_entity["bad_records"].status, by_entity["bad_records"].records_failed) == ("partial", 2)
    assert by_entity["source_down"].status == "failed" and by_entity["source_down"].error_message
    time.sleep(2)  # a retry would show in the log and as another run
    log = workers.log("w")
    assert "Retry in" not in log and log.count("succeeded in") == 2, log[-3000:]
    assert len(history(pg_url)) == 2
