"""The console script leaves without the interpreter's teardown, yet runs what exit must run."""
from __future__ import annotations

import os
import subprocess
import sys

# A module-level object whose finalizer speaks only in the interpreter's teardown; an atexit
# handler; then the real console-script entry point, here printing its version.
SCRIPT = """
import atexit, sys, threading
class Teardown:
    def __del__(self):
        sys.__stderr__.write("teardown ran\\n")
keep = Teardown()
atexit.register(lambda: sys.stdout.write("atexit ran\\n"))
if sys.argv[1] == "thread":
    threading.Thread(target=__import__("time").sleep, args=(0.3,)).start()
sys.argv = ["syncrunner", *sys.argv[2:]]
from syncrunner.cli import entry
entry()
"""


def _run(mode: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, mode, *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_the_console_script_skips_teardown_but_runs_atexit_and_flushes():
    p = _run("plain", "--version")
    assert p.returncode == 0
    assert "syncrunner, version" in p.stdout and "atexit ran" in p.stdout  # flushed, and atexit ran
    assert "teardown ran" not in p.stderr


def test_exit_codes_and_messages_survive_the_quick_exit():
    p = _run("plain", "run", "/no/such/spec.yaml")
    assert p.returncode == 2 and "does not exist" in p.stderr
    assert "teardown ran" not in p.stderr


def test_the_ordinary_exit_when_turned_off_or_another_thread_runs():
    off = _run("plain", "--version", SYNCRUNNER_FAST_EXIT="0")
    assert off.returncode == 0 and "teardown ran" in off.stderr
    busy = _run("thread", "--version")  # a live thread is waited for, as an ordinary exit does
    assert busy.returncode == 0 and "teardown ran" in busy.stderr and "atexit ran" in busy.stdout
