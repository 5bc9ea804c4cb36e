"""Mapping in worker processes, for large runs into PostgreSQL.

One Python process spends ~22 us of CPU per bench row reading, mapping and encoding, and the GIL
serialises it: the process, not either database, bounds a full sync. Here worker processes decode
packed rows, map and validate them (the spec's own compiled Mapper) and encode them as COPY text;
the run's process keeps the read, the fingerprints, the COPY, the merge, the checkpoint and
SyncHistory. Workers are pure functions of a chunk (runtime/chunkmap.py), so a chunk mapped by a
worker yields exactly the rows, dead letters and counts it would yield in the run's process.

The pool starts once a run has mapped START_AFTER_ROWS rows in its own process (small and
incremental runs never pay the start-up), or at once for a first load (empty target) whose counted
source is larger than that. It is used once its first worker answers: until then chunks keep being
mapped in process. Workers import no SQLAlchemy or driver (the COPY encoders are sent to them, and
the modules they run are kept free of both): ~47 MB each on the bench, against ~71 MB before.
Results are taken in chunk order, so chunks are still written, checkpointed and counted in order.
If a worker dies, the chunks it held are mapped in process and the run goes on without workers.

SYNCRUNNER_MAP_WORKERS sets the number of workers (0 turns them off; default: one per core up to 2)."""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Callable

from ..adapters.sources.base import Chunk, LazyRecords, RecordRecipe, decode_arrays
from ..envvars import env_number
from ..spec import Spec
from .chunkmap import EncodedRows, MappedChunk, map_chunk
from .mapping import Mapper, make_getter

log = logging.getLogger("syncrunner")
START_AFTER_ROWS = 20_000
DEFAULT_MAX_WORKERS = 2


def start_after_from_env() -> int:
    """SYNCRUNNER_MAP_WORKERS_AFTER: rows a run maps in its own process before starting workers."""
    return env_number("SYNCRUNNER_MAP_WORKERS_AFTER", START_AFTER_ROWS, int)


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


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs, sent once: the spec without its source options (no connection
    details or secrets cross to the workers; mapping never needs them)."""
    spec: Spec
    skip_validation: bool
    batch_size: int
    run_id: int
    parent: int     # the run's pid: it may already be gone when a worker starts
    encoders: tuple[list[str], list] | None = None  # the COPY encoders when they pickle (by name)


@dataclass
class Job:
    """One chunk for a worker: packed JSON texts and their recipe, or the records themselves."""
    raw: list[str] | None
    recipe: RecordRecipe | None
    records: list[dict] | None
    skip: frozenset[int]
    fps: list[int] | None
    fingerprint: bool   # fps left to the worker
    want_keys: bool


# -- in the worker process --------------------------------------------------------------------------
_worker: dict[str, Any] = {}


def _init(setup: WorkerSetup) -> None:
    """Build the spec's Mapper and COPY encoders once per worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the run stops itself
    threading.Thread(target=_exit_with_parent, args=(setup.parent,), daemon=True, name="sr-orphan").start()
    from .fingerprint import Fingerprinter
    names, encoders = setup.encoders or copy_encoders(setup.spec)
    _worker.update(setup=setup, mapper=Mapper(setup.spec, skip_validation=setup.skip_validation),
                   fingerprinter=Fingerprinter(setup.spec, skip_validation=setup.skip_validation),
                   key_getters=[make_getter(k) for k in setup.spec.source.key], names=names, encoders=encoders)


def copy_encoders(spec: Spec) -> tuple[list[str], list]:
    """The staging table's columns and their COPY encoders, as the run's PostgreSQL target has them."""
    from sqlalchemy.dialects.postgresql.psycopg2 import dialect as psycopg2_dialect

    from ..adapters.targets.postgresql import stage_encoders
    from .writer import build_table
    return stage_encoders(build_table(spec), psycopg2_dialect())


def _shipped_encoders(spec: Spec) -> tuple[list[str], list] | None:
    """The encoders built here, to send along, when each is a plain copytext function: they pickle by
    name, and a worker then never imports SQLAlchemy (~30 MB less per worker). Else None: a column
    with its own bind processor, and each worker builds the encoders itself."""
    from ..adapters.targets.copytext import SIMPLE
    names, encoders = copy_encoders(spec)
    simple = all(any(e is s for s in SIMPLE) for e in encoders)
    return ([str(n) for n in names], encoders) if simple else None  # str: not SQLAlchemy's quoted_name


def _exit_with_parent(parent: int) -> None:
    """A run killed outright (kill -9, OOM) cannot stop its workers, and each worker holds both
    ends of the pool's queues, so none ever sees end-of-file: a worker whose parent is gone exits."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)


def _ready() -> int:
    return os.getpid()


@lru_cache(maxsize=8)
def _maker(recipe: RecordRecipe) -> Callable[..., dict]:
    from ..adapters.sources.packed import recipe_maker
    return recipe_maker(recipe)


def _map_job(job: Job) -> MappedChunk:
    from ..adapters.targets.copytext import encode_rows
    w = _worker
    setup: WorkerSetup = w["setup"]
    if job.raw is not None:
        records: Any = LazyRecords(job.raw, _maker(job.recipe), job.recipe)
        if not job.skip:
            records._arrays = decode_arrays(job.raw)
    else:
        records = job.records
    fps = w["fingerprinter"].of(records, job.raw) if job.fingerprint else job.fps
    mc = map_chunk(setup.spec, w["mapper"], w["key_getters"], records, setup.run_id, skip=job.skip, fps=fps)
    rows, size, names, encoders = mc.rows, setup.batch_size, w["names"], w["encoders"]
    mc.encoded = EncodedRows(names, [(encode_rows(names, encoders, rows[i:i + size]), len(rows[i:i + size]))
                                     for i in range(0, len(rows), size)])
    mc.rows = None
    if not job.want_keys:
        mc.keys = None
    return mc


# -- in the run's process ---------------------------------------------------------------------------
class MapPool:
    """The run's view of its mapping workers: `submit` chunks in order, `take` their results in
    the same order. `active` once a worker has answered; before that the engine maps in process."""

    def __init__(self, spec: Spec, *, workers: int, skip_validation: bool, batch_size: int, run_id: int,
                 want_keys: bool):
        self.workers = workers
        self.want_keys = want_keys
        lean = replace(spec, source=replace(spec.source, options={}))
        setup = WorkerSetup(lean, skip_validation, batch_size, run_id, os.getpid(), _shipped_encoders(lean))
        # spawn, not fork: the run's process has threads (writer, lookups, heartbeat) and open
        # connections that a forked child must not inherit
        self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init, initargs=(setup,))
        self._probes = [self._pool.submit(_ready) for _ in range(workers)]
        self._queue: deque[tuple[Any, Future | None]] = deque()
        self.broken: str | None = None
        self.chunks_mapped = 0

    @property
    def active(self) -> bool:
        if self.broken is not None:
            return False
        done = [p for p in self._probes if p.done()]
        if any(p.exception() is None for p in done):
            return True
        if len(done) == len(self._probes):  # no worker could start: say why, map here
            self._stop(done[0].exception())
        return False

    def _stop(self, error: BaseException) -> None:
        self.broken = "a mapping worker process died" if isinstance(error, BrokenProcessPool) else \
            (f"{type(error).__name__}: {error}" if str(error) else type(error).__name__)
        log.warning("mapping workers stopped (%s); mapping in this process from here on", self.broken)

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until a worker has started (it raises what made it fail to start)."""
        from concurrent.futures import FIRST_COMPLETED, wait
        wait(self._probes, timeout=timeout, return_when=FIRST_COMPLETED)

    @property
    def depth(self) -> int:
        """Chunks kept queued: one per worker plus one waiting, so no worker idles."""
        return self.workers + 1

    def pending(self) -> int:
        return len(self._queue)

    def submit(self, item: Any, chunk: Chunk, skip: frozenset[int], fps: list[int] | None,
               fingerprint: bool) -> None:
        """Queue a chunk for mapping; `item` comes back with its result from `take`. `fingerprint`:
        the worker computes the chunk's fingerprints (`fps` is None)."""
        records = chunk.records
        if isinstance(records, LazyRecords) and records.recipe is not None:
            job = Job(records.raw, records.recipe, None, skip, fps, fingerprint, self.want_keys)
        else:
            job = Job(None, None, list(records), skip, fps, fingerprint, self.want_keys)
        fut: Future | None = None
        if self.broken is None:
            try:
                fut = self._pool.submit(_map_job, job)
            except BrokenProcessPool as e:  # `take` maps it here, in its turn
                self._stop(e)
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
        self._pool.shutdown(wait=True, cancel_futures=True)
