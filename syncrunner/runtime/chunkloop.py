"""The chunk loop of one real run (DESIGN.md §1): read -> map -> write + checkpoint, one target
transaction per chunk (runtime/chunkcommit.py). A chunk is mapped here while the one before it is
written (runtime/pipeline.py), or queued to the mapping workers once a large run has mapped enough
here (runtime/parallel.py); with fingerprints, one chunk is read ahead so its lookup overlaps."""
from __future__ import annotations

import threading
from typing import Any, Iterable

import sqlalchemy as sa

from syncrunner.core.mapping import Mapper, make_getter
from syncrunner.core.records import Chunk
from syncrunner.runtime.chunkcommit import Flow, commit_chunk
from syncrunner.runtime.chunkmap import MappedChunk, map_chunk
from syncrunner.runtime.fplookup import Prepared, UnchangedSkipper
from syncrunner.runtime.parallel import MapPool
from syncrunner.runtime.runstate import Interrupted, RunState

Item = tuple[Prepared, frozenset[int], list[dict]]  # a chunk, the records it skips, their keys seen


class ChunkLoop:
    """Hands each chunk of one run to the writer, in order; owns the mapping workers, if any."""

    def __init__(self, state: RunState, mapper: Mapper, flow: Flow, skipper: UnchangedSkipper | None, *,
                 map_workers: int, map_after: int):
        self.state = state
        self.mapper = mapper
        self.key_getters = [make_getter(k) for k in state.spec.source.key]
        self.flow = flow
        self.skipper = skipper
        self.map_workers = map_workers
        self.map_after = map_after          # rows mapped here before the pool starts
        self.pool: MapPool | None = None    # started once a large run has mapped map_after rows here
        self._mapped_here = 0               # rows mapped in this process so far
        self._handed = 0                    # chunks handed to the writer
        self._remapper: Mapper | None = None
        self._remap_lock = threading.Lock()

    def begin(self, engine: sa.Engine, conn: sa.Connection) -> None:
        """Load the stored fingerprints (in the caller's transaction): a forced run writes all."""
        if self.skipper is not None and not self.state.opts.force:
            self.skipper.start(engine, conn, self.flow.writer.table)

    def run(self, chunks: Iterable[Chunk], total: int | None) -> Any:
        """Write every chunk; returns the watermark of the last one committed."""
        flow = self.flow
        if self.map_after == 0:  # every chunk to the workers: start them now and wait for them
            self._start_pool(wait=True)
        elif flow.writer.empty and total is not None and total > self.map_after:
            self._start_pool()  # a first load (empty target) of a counted large source: every
            # row will be mapped, so the workers start now; chunks map here until one answers
        ahead: Prepared | None = None  # with fingerprint lookups, one chunk is read ahead: its lookup
        # runs while the chunk before it is mapped
        for chunk in chunks:
            prepared = self.skipper.prepare(chunk, defer=self._pooled()) if self.skipper else Prepared(chunk)
            for ready in ([ahead] if ahead is not None else []) + ([] if prepared.found else [prepared]):
                self._hand_over(ready)
            ahead = prepared if prepared.found else None
        if ahead is not None:
            self._hand_over(ahead)
        self._drain()
        if flow.pipe.busy:
            flow.watermark = self._settle()
        return flow.watermark

    def abandon(self) -> None:
        """A failed run: take the in-flight chunk's counts (the connection is the writer's until
        its chunk is done); its error, if any, is not the one reported."""
        if self.flow.pipe.busy:
            self.state.stats, _ = self.flow.pipe.collect()

    def close(self) -> None:
        self.flow.pipe.close()
        if self.pool is not None:
            self.pool.close()
        if self.skipper is not None:
            self.skipper.close()

    def _hand_over(self, prepared: Prepared) -> None:
        """Map a chunk (in this process, overlapping the previous chunk's write, or queued to the
        mapping workers), then hand it to the writer once the previous one has committed."""
        skip = self.skipper.unchanged(prepared) if prepared.found is not None else {}
        seen = self.skipper.seen(prepared.chunk, skip) if skip else []
        if prepared.found is not None:
            self.skipper.handed_over({key for i, key in prepared.candidates if i not in skip})
        skipped = frozenset(skip)
        to_map = len(skipped) < len(prepared.chunk.records)  # all unchanged: nothing to map, not worth a trip
        if self._pooled() and to_map:
            self.pool.submit((prepared, skipped, seen), prepared.chunk, skipped, prepared.fps,
                             fingerprint=self.skipper is not None and prepared.fps is None)
            # the oldest chunk goes to the writer when the queue is full, or as soon as it is
            # mapped and the writer is idle (a short run would otherwise wait for the queue to fill)
            while self.pool.pending() > self.pool.depth or (self.pool.head_done() and self.flow.pipe.free):
                self._write(*self.pool.take(self._remap))
            return
        mc = self._map_with(self.mapper, prepared, skipped)
        self._drain()  # chunks queued to workers go first (the pool may just have stopped)
        self._write((prepared, skipped, seen), mc)
        self._mapped_here += len(mc.rows)
        if self._mapped_here >= self.map_after:
            self._start_pool()

    def _pooled(self) -> bool:
        return self.pool is not None and self.pool.active

    def _start_pool(self, *, wait: bool = False) -> None:
        """Start the mapping workers, if this run may use them (see runtime/parallel.py)."""
        if self.pool is not None or not self.map_workers:
            return
        writer, opts = self.flow.writer, self.state.opts
        self.pool = MapPool(self.state.spec, workers=self.map_workers, skip_validation=opts.skip_validation,
                            batch_size=writer.batch_size, run_id=self.state.run_id,
                            want_keys=self.flow.deletes.generation is not None,
                            copy_text=writer.dialect.loads_text)
        if self.skipper is not None:  # more chunks are between a lookup and their commit now
            self.skipper.track_in_flight(self.pool.depth + 2)
        if wait:
            self.pool.wait_ready()

    def _drain(self) -> None:
        while self.pool is not None and self.pool.pending():
            self._write(*self.pool.take(self._remap))

    def _remap(self, item: Item) -> MappedChunk:
        """Map a chunk in this process again: a worker failed on it, or the database refused one of
        its bulk batches (the row-by-row retry needs the rows). Runs on the writer thread too, so it
        has a Mapper of its own."""
        prepared, skipped, _ = item
        with self._remap_lock:  # the main thread (a failed worker) and the writer may both get here
            if self._remapper is None:
                self._remapper = Mapper(self.state.spec, skip_validation=self.state.opts.skip_validation)
            return self._map_with(self._remapper, prepared, skipped)

    def _map_with(self, mapper: Mapper, prepared: Prepared, skipped: frozenset[int]) -> MappedChunk:
        return map_chunk(self.state.spec, mapper, self.key_getters, prepared.chunk.records, self.state.run_id,
                         skip=skipped, fps=self._fingerprints(prepared))

    def _fingerprints(self, prepared: Prepared) -> list[int] | None:
        """The chunk's fingerprints, computed here if they were left to a worker (deferred)."""
        if prepared.fps is None and self.skipper is not None:
            prepared.fps = self.skipper.fingerprinter.of(prepared.chunk.records)
        return prepared.fps

    def _write(self, item: Item, mc: MappedChunk) -> None:
        """Count and log a mapped chunk, wait for the previous chunk's commit, hand this one over."""
        prepared, _, seen = item
        for b in mc.bad:
            self.state.log_bad(b.key, b.field, b.value, b.reason)
        flow = self.flow
        if flow.pipe.busy:
            flow.watermark = self._settle()
        self._handed += 1
        flow.pipe.submit(commit_chunk, self.state, flow, prepared.chunk, mc, seen, flow.watermark,
                         lambda: self._remap(item))

    def _settle(self) -> Any:
        """Take the in-flight chunk's committed result (data, dead letters, staged keys and
        checkpoint landed together); returns the watermark after it."""
        self.state.stats, watermark = self.flow.pipe.collect()
        self.state.notify_chunk_done(self._handed)
        if self.state.stop.requested:
            raise Interrupted(self.state.stop.requested)
        return watermark

