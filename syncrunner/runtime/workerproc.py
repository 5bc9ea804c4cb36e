"""Starting a mapping worker process (runtime/mapworker.py), and the one spare worker that
`syncrunner run` starts before its own imports.

Kept free of SQLAlchemy, YAML and the rest of the runtime, so that the CLI can start a worker
first thing: the worker's own start-up (~40 ms of CPU: a fresh interpreter importing the mapping
modules) then runs on the other core while the run's process imports its database stack, and an
incremental run maps and COPY-encodes its chunks off the GIL from the first one. A pool
(runtime/mapworkers.py) takes the spare as its first process; a spare nobody takes ends when its
stdin closes (`discard_spares`, or the run's process exiting)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# `python -c` puts the working directory first on sys.path, ahead of PYTHONPATH: a checkout of
# another syncrunner there would be imported instead of the run's own (what -P does from 3.11 on)
# The collector is set before the worker's imports and set up (runtime/bulkgc.py).
WORKER_CODE = ("import sys\nif sys.path and sys.path[0] == '': del sys.path[0]\n"
               "from syncrunner.runtime import bulkgc; bulkgc.for_batch_work(); bulkgc.starting()\n"
               "from syncrunner.runtime.mapworker import main; main()")
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])

_spares: list[subprocess.Popen] = []


def worker_environment() -> dict[str, str]:
    """The run's environment without what looks like a credential or a connection URL (as
    redact.py judges names): mapping needs neither, so neither is in a worker's /proc environ."""
    from ..redact import is_secret_name, is_url_name
    env = {k: v for k, v in os.environ.items() if not (is_secret_name(k) or is_url_name(k))}
    env["PYTHONPATH"] = os.pathsep.join(
        [PACKAGE_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def spawn() -> subprocess.Popen:
    """A new worker process on two pipes; it waits for its WorkerSetup on stdin."""
    return subprocess.Popen([sys.executable, "-c", WORKER_CODE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=worker_environment())


DEFAULT_MAX_WORKERS = 2


def workers_from_env() -> int:
    """SYNCRUNNER_MAP_WORKERS: a count, 0/off to map in the run's process, empty/auto for the
    default (one per core, at most 2)."""
    value = os.environ.get("SYNCRUNNER_MAP_WORKERS", "").strip().lower()
    if value in ("", "auto"):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return min(DEFAULT_MAX_WORKERS, cores) if cores > 1 else 0
    if value in ("off", "false", "no"):
        return 0
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"SYNCRUNNER_MAP_WORKERS must be a number, 'auto' or 'off', not {value!r}") from None
    if count < 0:
        raise ValueError(f"SYNCRUNNER_MAP_WORKERS must not be negative ({count})")
    return count


def ensure_spare() -> None:
    """Have one started worker waiting for a pool, unless one already waits or workers are off
    (SYNCRUNNER_MAP_WORKERS=0, or a single core)."""
    if not have_spare() and workers_from_env():
        _spares.append(spawn())


def take_spare() -> subprocess.Popen | None:
    """The waiting worker, if there is one and it is still alive; the caller owns it."""
    while _spares:
        proc = _spares.pop()
        if proc.poll() is None:
            return proc
        _close(proc)
    return None


def have_spare() -> bool:
    return any(p.poll() is None for p in _spares)


def discard_spares() -> None:
    """End the workers nobody took: each exits at the end of its input."""
    while _spares:
        _close(_spares.pop())


def _close(proc: subprocess.Popen) -> None:
    """Close its pipes: the worker reads the end of its input and exits (not waited for: one
    still starting up would hold the run's exit for its imports; subprocess reaps it later)."""
    for pipe in (proc.stdin, proc.stdout):
        try:
            if pipe is not None:
                pipe.close()
        except OSError:
            pass
