"""Ordinary failures through the real command (issue 21.5): one clear line on stderr, the
documented exit code (README "Command line"), a traceback only with --debug."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncrunner.ops.clierrors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from syncrunner.runtime.locks import RunGuard
from syncrunner.runtime.target import make_engine, target_exists
from tests.helpers import cli, cli_env, cli_start, history, make_source, rows, write_spec


def _closed_port() -> int:
    """A local port nothing listens on: a database server that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _tables(sqlite_url: str) -> set[str]:
    return set(sa.inspect(sa.create_engine(sqlite_url)).get_table_names())


@pytest.fixture
def down_target() -> str:
    return f"postgresql://postgres@127.0.0.1:{_closed_port()}/crm"


@pytest.mark.parametrize("command", [["history"], ["sweep"], ["history", "--json"]])
def test_history_and_sweep_with_the_target_down_say_so_in_one_line(down_target, command):
    res = cli(*command, "--target", down_target, env=dict(os.environ))
    assert res.returncode == EXIT_FAILED, res.stderr
    assert _lines(res.stderr) == [_lines(res.stderr)[0]] and "Traceback" not in res.stderr
    assert res.stderr.startswith(f"error: target unreachable ({down_target}): OperationalError: ")
    assert "Connection refused" in res.stderr and res.stdout == ""


def test_health_with_the_target_down_is_unhealthy_target_unreachable(down_target, tmp_path):
    res = cli("health", "--target", down_target, env=dict(os.environ))
    assert res.returncode == 1
    assert _lines(res.stderr) == [_lines(res.stderr)[0]] and "Traceback" not in res.stderr
    assert res.stderr.startswith("UNHEALTHY: target unreachable (")
    as_json = cli("health", "--json", "--target", down_target, env=dict(os.environ))
    assert as_json.returncode == 1 and '"healthy": false' in as_json.stdout
    assert "target unreachable" in as_json.stdout and "Traceback" not in as_json.stderr


def test_debug_shows_the_traceback(down_target):
    res = cli("history", "--target", down_target, "--debug", env=dict(os.environ))
    assert res.returncode != 0 and "Traceback" in res.stderr and "OperationalError" in res.stderr


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_target_that_is_not_a_url_is_a_usage_error(tmp_path, mysql_url, how):
    make_source(mysql_url, 5)
    spec = write_spec(tmp_path)
    env = cli_env(mysql_url, "not a url")
    args = ["--target", "not a url"] if how == "option" else []
    res = cli("run", spec, *args, env=env, timeout=60)
    assert res.returncode == EXIT_USAGE, res.stderr
    assert "Traceback" not in res.stderr
    where = "--target" if how == "option" else "SYNCRUNNER_TARGET_URL"
    error, = [line for line in _lines(res.stderr) if line.startswith("Error:")]
    assert error == f"Error: {where} 'not a url' is not a database URL " \
                    "(e.g. postgresql://user@host/db, mysql://user@host/db, sqlite:///file.db)"
    assert list(tmp_path.iterdir()) == [spec]  # nothing created


def test_a_target_with_an_unknown_scheme_or_missing_driver_is_a_usage_error(tmp_path):
    res = cli("history", "--target", "oracle+nodriver://u:secret@h/db", env=dict(os.environ))
    assert res.returncode == EXIT_USAGE and "Traceback" not in res.stderr
    assert "Error: --target 'oracle+nodriver://u:***@h/db' names a kind of database" in res.stderr
    assert "secret" not in res.stderr


def test_an_unset_variable_the_spec_needs_is_a_usage_error_and_touches_nothing(tmp_path, sqlite_url):
    spec = write_spec(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "ITEM_DB_URL"}
    res = cli("run", spec, "--target", sqlite_url, env=env, timeout=60)
    assert res.returncode == EXIT_USAGE
    assert _lines(res.stderr) == [f"{spec}:5: source.url: environment variable ITEM_DB_URL is not set "
                                  f"(needed by spec {spec})"]
    assert not target_exists(sqlite_url)


@pytest.mark.parametrize("source", ["unreachable", "wrong password"])
def test_a_source_that_fails_to_connect_creates_nothing_in_the_target_but_is_recorded(
        tmp_path, mysql_url, sqlite_url, source):
    make_source(mysql_url, 5)
    url = sa.engine.make_url(mysql_url)
    bad = url.set(port=_closed_port()) if source == "unreachable" else url.set(password="Wrong-pw-4711")
    spec = write_spec(tmp_path)
    res = cli("run", spec, "--target", sqlite_url, env=cli_env(bad.render_as_string(False), sqlite_url),
              timeout=120)
    assert res.returncode == EXIT_FAILED, res.stderr
    assert "Traceback" not in res.stderr and "Wrong-pw-4711" not in res.stdout + res.stderr
    failed, = [line for line in _lines(res.stderr) if "ERROR" in line]
    assert "Failed testcrm items sync: SourceUnavailable: OperationalError: " in failed
    assert failed.endswith(" (nothing was written to the target)")
    assert ("Can't connect" if source == "unreachable" else "Access denied") in failed
    assert "items" not in _tables(sqlite_url)  # the target table was never created
    run, = history(sqlite_url)
    assert run.status == "failed" and run.error_message.startswith("SourceUnavailable: ")
    assert "\n" not in run.error_message


def _catches(pid: int, signum: int) -> bool:
    """Has process `pid` installed a handler for `signum` (/proc/PID/status SigCgt)?"""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def _sleeping(pid: int) -> bool:
    """Is process `pid` asleep in time.sleep (the lock wait's poll), not importing or connecting?"""
    return Path(f"/proc/{pid}/wchan").read_text().strip() == "hrtimer_nanosleep"


@pytest.mark.parametrize("when", ["starting up", "waiting for the lock"])
def test_sigterm_while_starting_exits_quietly_with_a_message(tmp_path, mysql_url, sqlite_url, when):
    """Another process holds the entity lock, so the run cannot get past start-up (no SyncHistory
    row): a SIGTERM as soon as `syncrunner run` has begun, or while it waits for the lock, ends
    it with a message, not with a bare -15."""
    make_source(mysql_url, 5)
    spec = write_spec(tmp_path)
    holder = RunGuard(make_engine(sqlite_url), "testcrm", "items", max_concurrent=0)
    holder.acquire(0)
    try:
        proc = cli_start("run", spec, "--wait", 120, env=cli_env(mysql_url, sqlite_url))
        deadline = time.monotonic() + 60
        while not (_catches(proc.pid, signal.SIGTERM) and (when == "starting up" or _sleeping(proc.pid))):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        holder.release()
    assert proc.returncode == EXIT_FAILED, out
    assert "Traceback" not in out
    assert _lines(out) == ["stopped by SIGTERM while starting: nothing was written"]
    assert not target_exists(sqlite_url) or "sync_history" not in _tables(sqlite_url)


# -- a SQLite target shared by two OS users ------------------------------------------------------
def _as_other_user() -> list[str]:
    """A command prefix that runs as `nobody`, able to read (not write) what root can: the test's
    Python may live under /root. Skips when this cannot be done here."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the command as a second OS user")
    try:
        import pwd
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no `nobody` user")
    prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
              "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    probe = subprocess.run([*prefix, sys.executable, "-c", "import os; print(os.geteuid())"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() == "0":
        pytest.skip(f"cannot run as nobody here: {probe.stderr.strip()}")
    return prefix


@pytest.fixture
def shared_dir():
    """A folder both users may write (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="sr-shared-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _run_as(prefix: list[str], spec: Path, target: str, source: str, cwd: Path) -> subprocess.CompletedProcess:
    env = cli_env(source, target, HOME=str(cwd))
    return subprocess.run([*prefix, sys.executable, "-m", "syncrunner.cli", "run", str(spec), "--full"],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_a_sqlite_target_shared_by_two_users_runs_for_both(mysql_url, shared_dir):
    nobody = _as_other_user()
    make_source(mysql_url, 50)
    spec = write_spec(shared_dir)
    db = shared_dir / "crm.db"
    sqlite3.connect(db).close()
    db.chmod(0o666)  # the database is shared: every user may write it
    target = f"sqlite:///{db}"
    first = _run_as([], spec, target, mysql_url, shared_dir)
    assert first.returncode == EXIT_OK, first.stderr
    locks = Path(f"{db}.locks")
    assert stat.S_IMODE(locks.stat().st_mode) == 0o777
    assert {stat.S_IMODE(f.stat().st_mode) for f in locks.iterdir()} == {0o666}
    second = _run_as(nobody, spec, target, mysql_url, shared_dir)
    assert second.returncode == EXIT_OK, second.stderr
    assert [r.status for r in history(target)] == ["success", "success"]
    assert rows(target, "SELECT COUNT(*) FROM items")[0][0] == 50


def test_lock_files_another_user_may_not_open_are_reported_as_a_permission_problem(mysql_url, shared_dir):
    nobody = _as_other_user()
    make_source(mysql_url, 5)
    spec = write_spec(shared_dir)
    db = shared_dir / "crm.db"
    target = f"sqlite:///{db}"
    assert _run_as([], spec, target, mysql_url, shared_dir).returncode == EXIT_OK  # root's, 0644
    db.chmod(0o666)  # shared afterwards: the lock files follow at root's or the owner's next run
    res = _run_as(nobody, spec, target, mysql_url, shared_dir)
    assert res.returncode == EXIT_FAILED, res.stderr
    assert "Traceback" not in res.stderr
    line, = [line for line in _lines(res.stderr) if "ERROR" in line]
    assert "Not starting testcrm items sync: LockUnavailable: permission denied on the run lock " \
           f"{db}.locks/" in line
    assert f"needs write access to {db}.locks" in line
    assert [r.status for r in history(target)] == ["success"]
