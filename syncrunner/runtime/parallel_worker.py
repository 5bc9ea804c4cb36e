"""A mapping worker process: `python -m syncrunner.runtime.parallel_worker`, started by the run's
MapPool (runtime/parallel.py). It reads jobs (chunks) from its stdin and writes their mapped,
COPY-encoded results to its stdout, one pickled frame each, in order.

Why a plain child process on two pipes and not multiprocessing: a spawned multiprocessing child
re-imports the run's `__main__` (the CLI: click and everything it pulls in) and needs a resource
tracker process (~13 MB); this one imports only what mapping needs: the stdlib, the spec's
dataclasses, the mapping and the COPY encoders (no SQLAlchemy, driver, jsonschema, YAML, click;
Jinja only for a spec whose rules or expressions need it). It exits when its stdin closes, which
also happens when the run is killed outright, so no worker outlives its run.

Frames: an 8-byte big-endian length, then a pickle. The worker answers each job with ("ok",
result) or ("error", text); its first frame is ("ready", pid)."""
from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
from dataclasses import dataclass
from typing import Any, BinaryIO

from syncrunner.core.mapping import Mapper, make_getter
from syncrunner.runtime.chunkmap import EncodedRows, MappedChunk, map_chunk
from syncrunner.spec.model import Spec

_HEADER = struct.Struct(">Q")


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs, sent once: the spec without its source options (no connection
    details or secrets cross to the workers; mapping never needs them)."""
    spec: Spec
    skip_validation: bool
    batch_size: int
    run_id: int
    encoders: tuple[list[str], list] | None = None  # the COPY encoders when they pickle (by name)
    rule_plans: tuple | None = None                 # the spec's rules, parsed (mapping.rule_plans)
    copy_text: bool = True  # answer with COPY text (PostgreSQL); else with the mapped rows themselves


@dataclass
class Job:
    """One chunk for a worker: its records."""
    records: list[dict] | None
    skip: frozenset[int]
    fps: list[int] | None
    fingerprint: bool   # fps left to the worker
    want_keys: bool


def send(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def receive(stream: BinaryIO) -> Any:
    """The next frame; EOFError when the other side has closed the pipe."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError("pipe closed")
    size, = _HEADER.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("pipe closed mid-frame")
    return pickle.loads(data)


def copy_encoders(spec: Spec) -> tuple[list[str], list]:
    """The staging table's columns and their COPY encoders, as the run's PostgreSQL target has them
    (only needed here when the run could not send them: it brings SQLAlchemy)."""
    from sqlalchemy.dialects.postgresql.psycopg2 import dialect as psycopg2_dialect

    from syncrunner.runtime.writer import build_table
    from syncrunner.targets.postgresql import stage_encoders
    return stage_encoders(build_table(spec), psycopg2_dialect())


class Worker:
    """The spec's Mapper, fingerprinter and COPY encoders, built once per process."""

    def __init__(self, setup: WorkerSetup):
        from syncrunner.core.fingerprint import Fingerprinter
        self.setup = setup
        if setup.copy_text:
            self.names, self.encoders = setup.encoders or copy_encoders(setup.spec)
        self.mapper = Mapper(setup.spec, skip_validation=setup.skip_validation, rule_plans=setup.rule_plans)
        self.fingerprinter = Fingerprinter(setup.spec, skip_validation=setup.skip_validation)
        self.key_getters = [make_getter(k) for k in setup.spec.source.key]

    def map(self, job: Job) -> MappedChunk:
        from syncrunner.targets.copytext import encode_rows
        setup = self.setup
        records = job.records
        fps = self.fingerprinter.of(records) if job.fingerprint else job.fps
        mc = map_chunk(setup.spec, self.mapper, self.key_getters, records, setup.run_id, skip=job.skip, fps=fps)
        # what the rows were made from goes before they are encoded: a worker's peak memory is
        # what one chunk holds at once
        job.records = None
        del records, fps
        if not job.want_keys:
            mc.keys = None
        if not setup.copy_text:  # a target without COPY: the rows travel back as they are
            return mc
        rows, size, names, encoders = mc.rows, setup.batch_size, self.names, self.encoders
        mc.rows = None
        texts, batch = [], None
        for i in range(0, len(rows), size):
            batch = rows[i:i + size]
            texts.append((encode_rows(names, encoders, batch), len(batch)))
        del rows, batch
        mc.encoded = EncodedRows(names, texts)
        return mc


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """The worker's loop: the setup, then one answer per job until the input closes."""
    worker = Worker(receive(inp))
    send(out, ("ready", os.getpid()))
    while True:
        try:
            job = receive(inp)
        except EOFError:
            return
        try:
            answer = ("ok", worker.map(job))
        except Exception as e:  # noqa: BLE001 - the run maps the chunk again itself; a real error recurs there
            answer = ("error", f"{type(e).__name__}: {e}")
        send(out, answer)
        answer = job = None  # not held while the next job arrives


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the run stops itself
    from syncrunner.runtime.memory import return_freed_memory
    return_freed_memory()
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the frames
    try:
        serve(inp, out)
    except (EOFError, BrokenPipeError):  # the run is gone
        pass
    # nothing to clean up, and the run waits for its workers to exit: skip the interpreter's
    # teardown (~15 ms per worker on the bench VM)
    os._exit(0)


if __name__ == "__main__":
    main()
