"""Issue 21.6: a resume point is never lost. Real `syncrunner run` processes killed with SIGKILL, a
MariaDB source and a PostgreSQL target, as in tests/test_crash.py."""
from __future__ import annotations

import math
import signal
import time

import sqlalchemy as sa

from syncrunner.dburl import create_engine
from tests.helpers import cli, cli_env, cli_start, history, make_source, rows, write_spec
from tests.test_crash import _json, _source, _target, _wait_for_progress, history_or_empty


def _kill(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()


def _wait_for_new_row(url: str, after_id: int, proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(r.id > after_id for r in history_or_empty(url)):
            return
        time.sleep(0.02)
    raise AssertionError(f"no SyncHistory row after run {after_id} within {timeout}s")


def test_a_run_killed_before_its_first_chunk_keeps_the_checkpoint_it_resumed(tmp_path, mysql_url, pg_url):
    """A is killed after 40,000 rows; B (resuming A) is killed as soon as its SyncHistory row
    appears, before its first chunk; C must still resume A's checkpoint and read only the rest."""
    n, chunk = 80000, 1000
    make_source(mysql_url, n)
    spec = write_spec(tmp_path, chunk_size=chunk, batch_size=chunk)
    env = cli_env(mysql_url, pg_url, SYNCRUNNER_HEARTBEAT_SECONDS=1)

    a = cli_start("run", spec, env=env)
    _wait_for_progress(pg_url, 40000)
    _kill(a)
    run_a = history(pg_url)[-1]
    assert run_a.status == "running" and 40000 <= run_a.records_processed < n

    # B's first chunk cannot commit while this SHARE lock holds the target table (reads pass, so B
    # starts and writes its SyncHistory row): B is surely killed before its first chunk
    blocker = create_engine(pg_url)
    with blocker.connect() as hold:
        hold.execute(sa.text("LOCK TABLE items IN SHARE MODE"))
        b = cli_start("run", spec, "--wait", 60, env=env)
        _wait_for_new_row(pg_url, run_a.id, b)
        _kill(b)
        hold.rollback()
    blocker.dispose()
    run_b = history(pg_url)[-1]
    assert run_b.id > run_a.id and run_b.records_processed == 0 and not _json(run_b.checkpoint)
    assert _json(run_b.configuration)["resumed_from"] == run_a.id

    c = cli("run", spec, "--wait", 60, env=env)
    assert c.returncode == 0, c.stdout + c.stderr
    run_c = history(pg_url)[-1]
    assert run_c.id > run_b.id and run_c.status == "success"
    assert _json(run_c.configuration)["resumed_from"] == run_a.id
    # C read only what A had not committed, and every row landed once
    rest = n - run_a.records_processed
    assert (run_c.records_processed, run_c.records_created) == (rest, n - run_a.records_created)
    assert _json(run_c.performance_metrics)["chunks"] == math.ceil(rest / chunk)
    assert run_a.records_created + run_c.records_created == n
    assert rows(pg_url, "SELECT COUNT(*), COUNT(DISTINCT id) FROM items")[0] == (n, n)
    assert _target(pg_url) == _source(mysql_url)
    assert [r.status for r in history(pg_url)] == ["failed", "failed", "success"]
