"""Issue 4: crash safety with real processes and real servers: kill -9 at random moments while the
source keeps changing, SIGTERM mid-run, and the target database restarted mid-run."""
from __future__ import annotations

import datetime as dt
import glob
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from syncrunner.dburl import create_engine
from tests.helpers import cli, cli_env, cli_start, history, item, make_source, rows, sync, write_spec

KILL_ROWS = int(os.environ.get("SYNCRUNNER_TEST_KILL_ROWS", "200000"))
KILL_POINTS = int(os.environ.get("SYNCRUNNER_TEST_KILL_POINTS", "6"))
NY = ZoneInfo("America/New_York")
log = logging.getLogger(__name__)


class ThreadAfterChunk:
    """Observer: once chunk `chunk_no` has committed, run `action` on a thread of its own (the
    run goes on meanwhile, as it would while a server restarts under it)."""

    def __init__(self, chunk_no: int, action):
        self.chunk_no, self.action = chunk_no, action

    def started(self, *a): pass
    def finished(self, *a): pass

    def chunk_done(self, spec, chunk_no, stats):
        if chunk_no == self.chunk_no:
            threading.Thread(target=self.action, daemon=True).start()


def _source(url) -> list[tuple]:
    """Source rows as the target should hold them (naive New York times -> UTC)."""
    return [(r.id, r.name, r.email, Decimal(str(r.amount)).quantize(Decimal("0.01")),
             r.updated_at.replace(tzinfo=NY).astimezone(dt.timezone.utc))
            for r in rows(url, "SELECT id, name, email, amount, updated_at FROM item ORDER BY id")]


def _target(url) -> list[tuple]:
    out = []
    for r in rows(url, "SELECT id, name, email, amount, updated_at FROM items ORDER BY id"):
        ts = r.updated_at if r.updated_at.tzinfo else r.updated_at.replace(tzinfo=dt.timezone.utc)
        out.append((r.id, r.name, r.email, Decimal(str(r.amount)).quantize(Decimal("0.01")),
                    ts.astimezone(dt.timezone.utc)))
    return out


class Changer(threading.Thread):
    """Keeps touching random source rows (updated_at = now) while syncs run."""

    def __init__(self, url: str, n: int, seed: int):
        super().__init__(daemon=True)
        self.engine = create_engine(url)
        self.n, self.rng = n, random.Random(seed)
        self.stop = threading.Event()
        self.touched: set[int] = set()
        self.changes = 0

    def run(self) -> None:
        while not self.stop.wait(0.02):
            ids = [self.rng.randint(1, self.n) for _ in range(3)]
            now = dt.datetime.now(NY).replace(tzinfo=None, microsecond=0)
            with self.engine.begin() as c:
                c.execute(item.update().where(item.c.id.in_(ids)).values(updated_at=now))
            self.touched.update(ids)
            self.changes += len(set(ids))

    def finish(self) -> None:
        self.stop.set()
        self.join()
        self.engine.dispose()


def _run_row(url, run_id):
    return next(r for r in history(url) if r.id == run_id)


def _wait_first_commit(pg_url, before: set, proc, timeout: float = 60) -> None:
    """Until the run started after `before` has committed a chunk (or the process ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        new = [r for r in history_or_empty(pg_url) if r.id not in before]
        if new and new[0].records_processed > 0:
            return
        time.sleep(0.05)


def test_kill_9_at_random_moments_while_the_source_changes_loses_and_duplicates_nothing(
        tmp_path, mysql_url, pg_url):
    t0 = time.monotonic()
    make_source(mysql_url, KILL_ROWS)
    # with a delete sweep: the keys staged by killed runs must survive into the run that finishes
    spec = write_spec(tmp_path, chunk_size=1000, batch_size=1000, extra="deletes: {mode: sweep}\n")
    env = cli_env(mysql_url, pg_url, SYNCRUNNER_HEARTBEAT_SECONDS=1)
    seed = int(os.environ.get("SYNCRUNNER_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    changer = Changer(mysql_url, KILL_ROWS, seed)
    changer.start()
    kills = []  # (delay, run id or None, rows committed by the killed run)
    try:
        for _ in range(KILL_POINTS):
            before = {r.id for r in history_or_empty(pg_url)}
            proc = cli_start("run", spec, "--wait", 30, env=env)
            started = time.monotonic()
            if rng.random() < 0.75:
                # most kills land mid-sync: timed from the run's first committed chunk, not from
                # the process start, whose cost varies with the machine's load
                _wait_first_commit(pg_url, before, proc)
                delay = rng.uniform(0.0, 1.5)
            else:  # some land early: before, during or just after the first chunk
                delay = rng.uniform(0.2, 1.2)
            time.sleep(delay)
            delay = time.monotonic() - started
            if proc.poll() is not None:  # finished before the kill: nothing left to interrupt
                proc.communicate()
                break
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            new = [r for r in history_or_empty(pg_url) if r.id not in before]
            kills.append((round(delay, 2), new[0].id if new else None, new[0].records_created if new else 0))
            if new:  # the killed run is left `running`; the sweep finds it dead once its lock is gone
                for _ in range(50):
                    res = cli("sweep", "--stale-after", "0s", env=env)
                    assert res.returncode == 0, res.stderr
                    if _run_row(pg_url, new[0].id).status == "failed":
                        break
                    time.sleep(0.1)
                swept = _run_row(pg_url, new[0].id)
                assert swept.status == "failed" and swept.error_message.startswith("heartbeat lost")
        for _ in range(3):  # run again until success, the changer still going
            res = cli("run", spec, "--wait", 30, env=env)
            if res.returncode == 0:
                break
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        changer.finish()
    final = cli("run", spec, env=env)  # one last delta run once the source is quiet
    assert final.returncode == 0, final.stdout + final.stderr

    runs = history(pg_url)
    first_ok = next(i for i, r in enumerate(runs) if r.status == "success")
    assert {r.status for r in runs[:first_ok]} == {"failed"} and runs[-1].status == "success"
    assert sum(r.records_created for r in runs) == KILL_ROWS  # no row created twice
    # updates come only from rows the changer touched, each change at most once
    assert sum(r.records_updated for r in runs) <= changer.changes
    assert all(r.status != "running" for r in runs)
    chain_end = runs[first_ok]  # the full run that finished the chain of killed and resumed runs
    assert _json(chain_end.configuration)["window"]["mode"] == "initial"
    sweep = _json(chain_end.performance_metrics)["deletes"]
    assert (sweep["status"], sweep["candidates"], sweep["records_deleted"]) == ("done", 0, 0), sweep
    assert rows(pg_url, "SELECT COUNT(*) FROM items WHERE deleted_at IS NOT NULL")[0][0] == 0
    resumed = [r for r in runs if _json(r.configuration).get("resumed_from")]
    src, tgt = _source(mysql_url), _target(pg_url)
    assert len(src) == len(tgt) == KILL_ROWS
    assert tgt == src
    killed_mid_sync = [k for k in kills if k[2]]
    assert killed_mid_sync, kills
    assert resumed, "no run resumed from a killed run's checkpoint"
    summary = (f"kill test: {KILL_ROWS:,} rows, seed {seed}, {len(kills)} kill points {kills}, "
               f"{len(killed_mid_sync)} with committed rows, {len(resumed)} resumed runs, {len(runs)} runs, "
               f"{changer.changes} source changes on {len(changer.touched)} rows, "
               f"{sum(r.records_updated for r in runs)} target updates, {len(src):,} rows compared, "
               f"{time.monotonic() - t0:.1f}s")
    print(summary)
    (Path(os.environ.get("SYNCRUNNER_TEST_REPORT_DIR", tmp_path)) / "kill_test.txt").write_text(summary)


def _json(value) -> dict:
    """JSON columns read with raw SQL: a dict on PostgreSQL, text elsewhere."""
    return json.loads(value) if isinstance(value, str) else (value or {})


def history_or_empty(url):
    try:
        return history(url)
    except sa.exc.DBAPIError:  # no sync_history table yet
        return []


def _wait_for_progress(url: str, at_least: int, timeout: float = 60) -> sa.Row:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = history_or_empty(url)
        if runs and runs[-1].records_processed >= at_least:
            return runs[-1]
        time.sleep(0.05)
    raise AssertionError(f"no run reached {at_least} records in {timeout}s")


@pytest.mark.parametrize("signals", [["SIGTERM"], ["SIGINT", "SIGINT"]])
def test_signal_mid_run_stops_cleanly_releases_the_lock_and_the_next_run_resumes(
        tmp_path, mysql_url, target_url, signals):
    n = 60000
    make_source(mysql_url, n)
    spec = write_spec(tmp_path, chunk_size=500, batch_size=500)
    env = cli_env(mysql_url, target_url)
    proc = cli_start("run", spec, env=env)
    _wait_for_progress(target_url, 3000)
    for name in signals:
        proc.send_signal(getattr(signal, name))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out
    stopped = history(target_url)[-1]
    assert stopped.status == "failed" and stopped.error_message.startswith("interrupted"), out
    assert signals[0] in stopped.error_message
    assert stopped.end_time is not None
    assert 0 < stopped.records_processed < n
    if len(signals) == 1:  # stopped after a whole chunk
        assert stopped.records_processed % 500 == 0
    assert rows(target_url, "SELECT COUNT(*) FROM items")[0][0] == stopped.records_created
    # the lock is free at once (no --wait) and the next run resumes from the checkpoint
    nxt = cli("run", spec, env=env)
    assert nxt.returncode == 0, nxt.stdout + nxt.stderr
    resumed = history(target_url)[-1]
    assert _json(resumed.configuration)["resumed_from"] == stopped.id
    assert stopped.records_created + resumed.records_created == n
    assert rows(target_url, "SELECT COUNT(*), COUNT(DISTINCT id) FROM items")[0] == (n, n)


# -- the target database restarted mid-run: a private PostgreSQL server --------------------------------
def _pg_bin() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists() and Path(candidate, "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port, so restarting it breaks nobody else's tests."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="sr-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync")
        self.start()

    def start(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def cleanup(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


def crash_restart(server: PrivatePostgres, pause: float) -> tuple[Callable[[], None], threading.Event]:
    """A restart of the server (an immediate stop: a crash, not a polite shutdown) after which
    the returned event is set."""
    restarted = threading.Event()

    def restart() -> None:
        server.stop("immediate")
        time.sleep(pause)
        server.start()
        restarted.set()
    return restart, restarted


@pytest.fixture
def private_pg():
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    pg = PrivatePostgres(bindir)
    try:
        pg.init()
        yield pg
    finally:
        pg.cleanup()


def test_target_restarted_mid_run_retries_the_chunk_and_nothing_is_half_written(
        tmp_path, mysql_url, private_pg, caplog, monkeypatch):
    n = 40000
    make_source(mysql_url, n)
    spec = write_spec(tmp_path, chunk_size=500, batch_size=500)
    monkeypatch.setenv("SYNCRUNNER_TARGET_RETRY_SECONDS", "60")
    restart, restarted = crash_restart(private_pg, 1.0)


    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="syncrunner"):
        result = sync(spec, mysql_url, private_pg.url, observers=[ThreadAfterChunk(10, restart)], heartbeat_seconds=0.2)
    assert restarted.is_set()
    assert "lost the target connection" in caplog.text
    assert result.status == "success", result.error
    assert "writing chunk" in caplog.text and "again" in caplog.text
    # the run's own counts agree with the data: the chunk was written exactly once
    h = history(private_pg.url)[-1]
    assert (h.status, h.records_created, h.records_processed) == ("success", n, n)
    assert rows(private_pg.url, "SELECT COUNT(*), COUNT(DISTINCT id) FROM items")[0] == (n, n)
    again = sync(spec, mysql_url, private_pg.url)
    assert again.status == "success" and again.stats.created == 0
    src = _source(mysql_url)
    assert _target(private_pg.url) == src
    print(f"restart test: {n:,} rows, {time.monotonic() - t0:.1f}s")


def test_a_full_rerun_into_a_filled_table_survives_a_target_restart(tmp_path, mysql_url, private_pg, caplog,
                                                                    monkeypatch):
    """Issue 21.7: a `--full` re-run into a filled table looks every chunk's fingerprints up on a
    connection of its own; the target crashes mid-run and is back 5 s later. Every connection the
    run holds (lookups, heartbeat, locks, writer) must survive it, not only the writer's."""
    n = 40000
    make_source(mysql_url, n)
    spec = write_spec(tmp_path, chunk_size=250, batch_size=250)
    assert sync(spec, mysql_url, private_pg.url).stats.created == n
    monkeypatch.setenv("SYNCRUNNER_TARGET_RETRY_SECONDS", "60")
    restart, restarted = crash_restart(private_pg, 5.0)

    with caplog.at_level(logging.INFO, logger="syncrunner"):
        result = sync(spec, mysql_url, private_pg.url, full=True, observers=[ThreadAfterChunk(10, restart)],
                      heartbeat_seconds=0.2)
    assert restarted.is_set()
    assert "lost the target connection" in caplog.text
    assert result.status == "success", result.error
    assert (result.stats.fetched, result.stats.unchanged, result.stats.created, result.stats.updated) == (n, n, 0, 0)
    h = history(private_pg.url)[-1]
    assert (h.status, h.records_processed, h.records_created, h.records_updated) == ("success", n, 0, 0)
    assert _target(private_pg.url) == _source(mysql_url)


def test_target_database_recreated_mid_run_fails_at_once_instead_of_waiting_for_the_target(
        tmp_path, mysql_url, pg_url, caplog, monkeypatch):
    """The target database is dropped (its connections terminated) and created again, empty, under
    a running sync. The target answers again at once, but the run's SyncHistory row is gone
    (`relation "sync_history" does not exist`): waiting cannot bring it back, so the run must fail
    with that cause right away, not retry it for the whole SYNCRUNNER_TARGET_RETRY_SECONDS."""
    make_source(mysql_url, 40000)
    spec = write_spec(tmp_path, chunk_size=500, batch_size=500)
    monkeypatch.setenv("SYNCRUNNER_TARGET_RETRY_SECONDS", "60")
    url = sa.make_url(pg_url)
    name = url.database
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    recreated = threading.Event()
    dropped_at: list[float] = []
    problems: list[BaseException] = []

    def recreate() -> None:
        try:
            with admin.connect() as c:
                for _ in range(20):  # a reconnecting run may slip in between the terminate and the drop
                    try:
                        c.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
                        break
                    except sa.exc.DBAPIError:
                        time.sleep(0.05)
                dropped_at.append(time.monotonic())
                c.execute(sa.text(f'CREATE DATABASE "{name}"'))
            recreated.set()
        except BaseException as e:  # noqa: BLE001 - reported by the test's thread
            problems.append(e)


    try:
        with caplog.at_level(logging.INFO, logger="syncrunner"):
            result = sync(spec, mysql_url, pg_url, observers=[ThreadAfterChunk(5, recreate)], heartbeat_seconds=0.2)
        returned_at = time.monotonic()
    finally:
        admin.dispose()
    assert not problems, problems
    assert recreated.is_set() and dropped_at
    took = returned_at - dropped_at[0]
    print(f"recreated-target test: the run returned {took:.1f}s after the drop "
          f"({result.status}: {result.error})")
    assert "lost the target connection" in caplog.text  # it did take the outage path
    assert result.status == "failed"
    assert "regaining run" in result.error and 'relation "sync_history" does not exist' in result.error, \
        result.error
    assert took < 20, f"the run retried a missing table for {took:.1f}s: {result.error}"
    assert history_or_empty(pg_url) == []  # nothing was written into the new, empty database


def test_a_stop_right_after_a_chunk_committed_still_counts_that_chunk(tmp_path, mysql_url, pg_url, monkeypatch):
    """The second Ctrl-C can land after a chunk's transaction committed but before the run's thread
    took its counts (between the writer's answer and the assignment; seen as a rare flake of the
    signal test above). SyncHistory must still count what the target holds, and the next run
    resume after that chunk."""
    from syncrunner.runtime.pipeline import WriteAhead
    make_source(mysql_url, 3000)
    spec = write_spec(tmp_path, chunk_size=500, batch_size=500)
    real_collect = WriteAhead.collect
    calls = []

    def collect_then_interrupted(self):
        value = real_collect(self)
        calls.append(value)
        if len(calls) == 3:  # chunk 3 is committed and its result taken from the pipe, then the signal
            raise KeyboardInterrupt("SIGINT")
        return value
    monkeypatch.setattr(WriteAhead, "collect", collect_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        sync(spec, mysql_url, pg_url, map_workers=0)
    stopped = history(pg_url)[-1]
    assert stopped.status == "failed" and stopped.error_message.startswith("interrupted")
    assert rows(pg_url, "SELECT COUNT(*) FROM items")[0][0] == stopped.records_created == 1500
    assert stopped.records_processed == 1500
    assert _json(stopped.performance_metrics)["chunks"] == 3
    monkeypatch.setattr(WriteAhead, "collect", real_collect)
    resumed = sync(spec, mysql_url, pg_url)
    assert resumed.status == "success" and resumed.stats.created == 1500
    assert _json(history(pg_url)[-1].configuration)["resumed_from"] == stopped.id
