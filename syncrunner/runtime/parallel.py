"""Mapping in worker processes, for large runs.

One Python process spends ~22 us of CPU per bench row reading, mapping and encoding, and the GIL
serialises it: the process, not either database, bounds a full sync. Here worker processes map and validate them (the spec's own compiled Mapper) and encode them as COPY text
(PostgreSQL) or send the mapped rows back as they are (SQLite, MySQL: the run's process then binds
and inserts them); the run's process keeps the read, the fingerprint lookups, the write, the
merge, the checkpoint and SyncHistory. Workers are pure functions of a chunk (runtime/chunkmap.py), so a chunk mapped by a
worker yields exactly the rows, dead letters and counts it would yield in the run's process.

The pool starts once a run has mapped START_AFTER_ROWS rows in its own process, or at once for a
first load (empty target table) whose counted source is larger than that. It is used once its
first worker answers: until then chunks keep being mapped in process. Workers are plain child processes on two pipes (runtime/parallel_worker.py), not
multiprocessing: they import no SQLAlchemy, driver, YAML, click or (for specs that need none) Jinja,
since the COPY encoders and the parsed rules are sent to them.
Results are taken in chunk order, so chunks are still written, checkpointed and counted in order.
If a worker dies, the chunks it held are mapped in process and the run goes on without workers.

SYNCRUNNER_MAP_WORKERS sets the number of workers (0 turns them off; default: one per core up to 2,
and none for a remote source, REMOTE_SOURCE_KINDS: there the API's latency, paging and rate limit
bound the run, not mapping. Measured 2026-12-05 on 2 shared cores, 50,000 GoHighLevel opportunities
into PostgreSQL through the CLI: against the fake with no rate limit the workers saved ~1% wall time
(median of 6 paired runs, 7-14 s each, pairs ranging -16%..+12%) for +14 MB peak RSS (92 vs 77 MB);
at the documented 100 requests / 10 s, 112.6 s with them and 108.1 s without. A count set
explicitly starts them for any source).
Workers get the run's environment without what looks like a credential or a connection URL."""
from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from syncrunner.core.mapping import rule_plans
from syncrunner.core.records import Chunk
from syncrunner.runtime.chunkmap import MappedChunk
from syncrunner.runtime.parallel_worker import Job, WorkerSetup, copy_encoders, receive, send
from syncrunner.spec.model import Spec

log = logging.getLogger("syncrunner")
START_AFTER_ROWS = 20_000
REMOTE_SOURCE_KINDS = frozenset({"http"})  # no workers by default: the API, not mapping, bounds the run
# `python -c` puts the working directory first on sys.path, ahead of PYTHONPATH: a checkout of
# another syncrunner there would be imported instead of the run's own (what -P does from 3.11 on)
WORKER_CODE = ("import sys\nif sys.path and sys.path[0] == '': del sys.path[0]\n"
               "from syncrunner.runtime.parallel_worker import main; main()")
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def worker_environment() -> dict[str, str]:
    """The run's environment without what looks like a credential or a connection URL (as
    redact.py judges names): mapping needs neither, so neither is in a worker's /proc environ."""
    from syncrunner.core.redact import is_secret_name, is_url_name
    env = {k: v for k, v in os.environ.items() if not (is_secret_name(k) or is_url_name(k))}
    env["PYTHONPATH"] = os.pathsep.join(
        [PACKAGE_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def spawn() -> subprocess.Popen:
    """A new worker process on two pipes; it waits for its WorkerSetup on stdin."""
    return subprocess.Popen([sys.executable, "-c", WORKER_CODE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=worker_environment())


def _shipped_encoders(spec: Spec) -> tuple[list[str], list] | None:
    """The encoders built here, to send along, when each is a plain copytext function: they pickle by
    name, and a worker then never imports SQLAlchemy (~30 MB less per worker). Else None: a column
    with its own bind processor, and each worker builds the encoders itself."""
    from syncrunner.targets.copytext import SIMPLE
    names, encoders = copy_encoders(spec)
    simple = all(any(e is s for s in SIMPLE) for e in encoders)
    return ([str(n) for n in names], encoders) if simple else None  # str: not SQLAlchemy's quoted_name


class WorkerDied(Exception):
    """A mapping worker process exited or closed its pipe."""


class WorkerFailed(Exception):
    """A worker could not map a chunk (the text is its error); the run maps it itself."""


class _Process:
    """One worker process and the thread that feeds it jobs from the pool's queue, one at a time."""

    def __init__(self, setup: WorkerSetup, jobs: "queue.Queue", on_death: Callable[[BaseException], None],
                 number: int):
        self.proc = spawn()
        self.ready: Future = Future()
        self._jobs, self._on_death = jobs, on_death
        self._setup = setup
        self.thread = threading.Thread(target=self._feed, daemon=True, name=f"sr-mapworker-{number}")
        self.thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _feed(self) -> None:
        inp, out = self.proc.stdin, self.proc.stdout
        try:
            send(inp, self._setup)
            kind, pid = receive(out)
            self.ready.set_result(pid)
        except (EOFError, OSError) as e:
            self.ready.set_exception(WorkerDied(f"a mapping worker process could not start ({e})"))
            self._on_death(self.ready.exception())
            return
        while True:
            entry = self._jobs.get()
            if entry is None:  # the pool closes
                return
            job, fut = entry
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                send(inp, job)
                kind, value = receive(out)
            except (EOFError, OSError):
                died = WorkerDied("a mapping worker process died")
                fut.set_exception(died)
                self._on_death(died)
                return
            except BaseException as e:  # noqa: BLE001 - e.g. a chunk that would not pickle
                fut.set_exception(e)
                self._on_death(e)
                return
            if kind == "ok":
                fut.set_result(value)
            else:
                fut.set_exception(WorkerFailed(value))

    def close_input(self) -> None:
        try:
            self.proc.stdin.close()  # the worker's loop ends at end of input
        except OSError:
            pass

    def stop(self, timeout: float) -> None:
        self.close_input()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


# -- in the run's process ---------------------------------------------------------------------------
class MapPool:
    """The run's view of its mapping workers: `submit` chunks in order, `take` their results in
    the same order. `active` once a worker has answered; before that the engine maps in process.
    Each worker takes the next queued chunk when it is free, so a slow chunk holds up no other."""

    def __init__(self, spec: Spec, *, workers: int, skip_validation: bool, batch_size: int, run_id: int,
                 want_keys: bool, copy_text: bool = True):
        self.workers = workers
        self.want_keys = want_keys
        lean = replace(spec, source=replace(spec.source, options={}))
        setup = WorkerSetup(lean, skip_validation, batch_size, run_id,
                            _shipped_encoders(lean) if copy_text else None,
                            None if skip_validation else rule_plans(lean), copy_text)
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self.broken: str | None = None
        self.chunks_mapped = 0
        self._closing = False
        self._queue: deque[tuple[Any, Future | None]] = deque()
        self._setup = setup
        self._procs = [_Process(setup, self._jobs, self._died, n) for n in range(workers)]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    @property
    def active(self) -> bool:
        if self.broken is not None:
            return False
        ready = [p.ready for p in self._procs]
        if any(f.done() and f.exception() is None for f in ready):
            return True
        if all(f.done() for f in ready):  # no worker could start: say why, map here
            self._stop(ready[0].exception())
        return False

    def _died(self, error: BaseException) -> None:
        """A worker is gone: the pool is not used again, and chunks still queued fail (they are
        mapped in process by `take`, in their turn)."""
        if self._closing:
            return
        self._stop(error)
        for fut in self._queued():
            fut.set_exception(error)

    def _queued(self) -> list[Future]:
        """Take every job no worker has taken yet off the queue; their futures."""
        futures = []
        while True:
            try:
                entry = self._jobs.get_nowait()
            except queue.Empty:
                return futures
            if entry is not None:
                futures.append(entry[1])

    def _stop(self, error: BaseException | None) -> None:
        with self._lock:
            if self.broken is not None:
                return
            self.broken = (str(error) if isinstance(error, WorkerDied) else
                           f"{type(error).__name__}: {error}" if error is not None and str(error) else
                           type(error).__name__)
        log.warning("mapping workers stopped (%s); mapping in this process from here on", self.broken)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until a worker has started (or none could)."""
        from concurrent.futures import FIRST_COMPLETED, wait
        wait([p.ready for p in self._procs], timeout=timeout, return_when=FIRST_COMPLETED)

    @property
    def depth(self) -> int:
        """Chunks kept queued: one per worker plus one waiting, so no worker idles."""
        return self.workers + 1

    def pending(self) -> int:
        return len(self._queue)

    def head_done(self) -> bool:
        """The oldest queued chunk's result is in: `take` would not wait."""
        return bool(self._queue) and (self._queue[0][1] is None or self._queue[0][1].done())

    def submit(self, item: Any, chunk: Chunk, skip: frozenset[int], fps: list[int] | None,
               fingerprint: bool) -> None:
        """Queue a chunk for mapping; `item` comes back with its result from `take`. `fingerprint`:
        the worker computes the chunk's fingerprints (`fps` is None)."""
        job = Job(list(chunk.records), skip, fps, fingerprint, self.want_keys)
        fut: Future | None = None
        if self.broken is None:
            fut = Future()
            self._jobs.put((job, fut))
        self._queue.append((item, fut))

    def take(self, remap: Callable[[Any], MappedChunk]) -> tuple[Any, MappedChunk]:
        """The oldest queued item and its mapped chunk (waiting for it). If a worker failed (killed,
        or a chunk that would not pickle), that chunk is mapped in process by `remap(item)`, which
        raises the real error if there is one, and the workers are not used again."""
        item, fut = self._queue.popleft()
        if self.broken is None and fut is not None:
            try:
                mc = fut.result()
                self.chunks_mapped += 1
                return item, mc
            except Exception as e:  # noqa: BLE001 - the chunk is mapped again here; a real error recurs
                self._stop(e)
        return item, remap(item)

    def close(self) -> None:
        """Cancel what no worker took yet, let each worker finish its chunk, end the processes."""
        self._closing = True
        for fut in self._queued():
            fut.cancel()
        for _ in self._procs:
            self._jobs.put(None)
        for p in self._procs:
            p.thread.join(timeout=30.0)
            p.close_input()
        for p in self._procs:  # all told first: they exit side by side
            p.stop(timeout=10.0)
