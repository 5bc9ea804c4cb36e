"""Mark and sweep of rows deleted upstream (DESIGN.md §9).

Delta sync cannot see a hard delete upstream. On an unwindowed full run of a spec with
`deletes: {mode: sweep}`, the key of every record seen is staged in a keys table in the target
database (`sr_seen_<table>`), written in the same transaction as the chunk that saw it, so that keys
and checkpoint agree after a crash. A run that resumes a failed one continues the same *generation*
of staged keys (the generation is recorded in the checkpoint). When the run ends `success`, target
rows whose key was not staged are marked deleted (`deleted_at`) or removed, unless that would touch
more than `max_delete_fraction` of the table (then it is refused unless --allow-mass-delete).
Keys are never held in Python memory.

`deletes: {mode: mark_and_sweep}` (reference note 001) is for APIs with no delta filter that can
list every id (GoHighLevel): pass 1 lists every id into the same keys table before the records are
read (a fresh generation each run), pass 2 is the run itself, staging what it reads as above. As
the listing is complete whatever the run's window, a delta run sweeps too; a failed, partial,
--dry-run or --max-records run still does not."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import sqlalchemy as sa

from syncrunner.core.coerce import coercer
from syncrunner.core.window import Window
from syncrunner.runtime import history
from syncrunner.runtime.strategy import RunOptions
from syncrunner.spec.model import Spec
from syncrunner.targets.sqltypes import UTCDateTime

log = logging.getLogger("syncrunner.deletes")

DELETED_AT = "deleted_at"
CHECKPOINT_KEY = "seen_keys"    # the generation of staged keys, in SyncHistory.checkpoint


def soft_deletes(spec: Spec) -> bool:
    return spec.deletes.sweeps and spec.deletes.action == "soft"


def deleted_at_column() -> sa.Column:
    """The column soft deletes add to the target table; an upsert writes NULL into it, so a
    record that reappears upstream is un-deleted (and counted as updated)."""
    return sa.Column(DELETED_AT, UTCDateTime(), nullable=True)


def seen_table(target: sa.Table, keys: list[str]) -> sa.Table:
    """sr_seen_<table>: (generation, key columns...), typed like the target's key."""
    md = sa.MetaData()
    cols = [sa.Column("generation", sa.Integer, nullable=False)]
    cols += [sa.Column(k, target.c[k].type, nullable=False) for k in keys]
    name = f"sr_seen_{target.name}"[:63]
    return sa.Table(name, md, *cols, sa.Index(f"ix_{name}"[:63], "generation", *keys))


@dataclass
class DeleteSweep:
    """The delete sweep of one run: decides up front whether keys are staged, stages them per
    chunk, and sweeps (or refuses, saying why) at the end."""

    spec: Spec
    target: sa.Table
    allow_mass_delete: bool = False
    generation: int | None = None        # None: no keys staged by this run
    refused: str | None = None           # why no sweep will happen, once known
    routine: bool = False                # refused by how the run was asked for (windowed, --dry-run)
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.keys = list(self.spec.target.key)
        self.seen = seen_table(self.target, self.keys)

    @property
    def active(self) -> bool:
        return self.spec.deletes.sweeps

    @property
    def two_pass(self) -> bool:
        return self.spec.deletes.mode == "mark_and_sweep"

    # -- start -------------------------------------------------------------------------------------
    def begin(self, conn: sa.Connection, window: Window, opts: RunOptions, run_id: int) -> None:
        """In the transaction that starts the run: stage keys only for an unwindowed full run."""
        if not self.active:
            return
        self.refused = refusal_before_run(window, opts, listed=self.two_pass)
        if self.refused:
            self.routine = True  # every incremental run: expected, not worth a warning
            return
        if self.spec.narrowed_by:  # asked for by the operator, maybe expecting a sweep: a warning
            self.refused = (f"--param {', '.join(self.spec.narrowed_by)} narrows the fetch (not the "
                            f"parameter's default): rows it does not read are not deleted upstream")
            return
        self.seen.create(conn, checkfirst=True)
        if window.resume_run is not None and not self.two_pass:
            cp = (history.run_row(conn, window.resume_run).checkpoint or {})
            self.generation = cp.get(CHECKPOINT_KEY)
            if self.generation is None:
                self.refused = (f"it resumes run {window.resume_run}, which did not stage the keys it saw")
            return
        # a fresh full run: whatever is staged belongs to abandoned runs (we hold the entity lock)
        conn.execute(self.seen.delete())
        self.generation = run_id

    def list_ids(self, engine_conn: sa.Connection, source: Any, stop: Callable[[], None]) -> None:
        """Pass 1 of mark_and_sweep: stage every id the source lists, a page per transaction, so
        memory does not grow with the number of records. Pass 2 (the run's chunks) stages the keys
        it reads under the same generation, so a record created between the passes is not swept;
        one deleted between them is swept by the next run. `stop` raises when the run must stop."""
        if self.generation is None or not self.two_pass:
            return
        coerce = self._key_coercers()
        n = 0
        for page in source.ids():
            stop()
            rows = [{"generation": self.generation, **{k: c(key) for k, c in coerce.items()}} for key in page]
            if rows:
                with engine_conn.begin():
                    engine_conn.execute(self.seen.insert(), rows)
            n += len(rows)
        self.metrics["ids_listed"] = n
        log.info("%s: listed %d id(s) for the delete sweep", self.spec.name, n)

    def _key_coercers(self) -> dict[str, Callable[[tuple], Any]]:
        """Target key column -> how to read it from a listed source key (typed like its field)."""
        spec, out = self.spec, {}
        for col in self.keys:
            i = spec.key_fields.index(col)
            f = spec.fields[col]
            typed = coercer(f.type, tz=spec.source.timezone, precision=f.precision, scale=f.scale)
            out[col] = lambda key, i=i, typed=typed: typed(key[i])
        return out

    def checkpoint(self) -> dict:
        return {CHECKPOINT_KEY: self.generation} if self.generation is not None else {}

    # -- per chunk ---------------------------------------------------------------------------------
    def stage(self, conn: sa.Connection, rows: list[dict]) -> None:
        """Inside the chunk's transaction. Duplicates (a record seen twice in one run) are harmless."""
        if self.generation is None or not rows:
            return
        g = self.generation
        conn.execute(self.seen.insert(), [{"generation": g, **{k: r[k] for k in self.keys}} for r in rows])

    # -- end ---------------------------------------------------------------------------------------
    def finish(self, conn: sa.Connection, status: str) -> dict:
        """After the run's last chunk; returns what goes into performance_metrics["deletes"]."""
        if not self.active:
            return {}
        d = self.spec.deletes
        self.metrics = {"mode": d.mode, "action": d.action, "records_deleted": 0,
                        **{k: v for k, v in self.metrics.items() if k == "ids_listed"}}
        if self.refused is None and status != "success":
            self.refused = f"the run ended {status}"
        if self.refused is None:
            self._sweep(conn, d.action, d.max_delete_fraction)
        if self.refused is not None:
            self.metrics.update(status="refused", reason=f"not swept: {self.refused}")
            log.log(logging.INFO if self.routine else logging.WARNING, "%s: deletes not swept: %s",
                    self.spec.name, self.refused)
        if self.generation is not None and status != "failed":
            conn.execute(self.seen.delete().where(self.seen.c.generation == self.generation))
        return self.metrics

    def _sweep(self, conn: sa.Connection, action: str, max_fraction: float) -> None:
        q = conn.dialect.identifier_preparer.quote
        t, s = q(self.target.name), q(self.seen.name)
        soft = action == "soft"
        live = f"{t}.{q(DELETED_AT)} IS NULL" if soft else "1=1"
        join = " AND ".join(f"{s}.{q(k)} = {t}.{q(k)}" for k in self.keys)
        unseen = f"NOT EXISTS (SELECT 1 FROM {s} WHERE {s}.generation = :g AND {join})"
        params = {"g": self.generation}
        total = int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {t} WHERE {live}")).scalar_one())
        doomed = int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {t} WHERE {live} AND {unseen}"),
                                  params).scalar_one())
        self.metrics.update(table_rows=total, candidates=doomed,
                            fraction=round(doomed / total, 4) if total else 0.0,
                            max_delete_fraction=max_fraction)
        if total and doomed / total > max_fraction and not self.allow_mass_delete:
            self.refused = (f"it would {'mark' if soft else 'remove'} {doomed:,} of {total:,} rows "
                            f"({doomed / total:.0%}), more than max_delete_fraction {max_fraction:g}; "
                            f"rerun with --allow-mass-delete if that is right")
            return
        n = 0
        if doomed:
            if soft:
                stmt = sa.text(f"UPDATE {t} SET {q(DELETED_AT)} = :now WHERE {live} AND {unseen}")
                stmt = stmt.bindparams(sa.bindparam("now", type_=UTCDateTime()))
                params["now"] = history.utcnow()
            else:
                stmt = sa.text(f"DELETE FROM {t} WHERE {unseen}")
            n = conn.execute(stmt, params).rowcount
        self.metrics.update(status="done", records_deleted=n)
        log.info("%s: %s %d row(s) not seen upstream", self.spec.name,
                 "marked deleted" if soft else "removed", n)


def refusal_before_run(window: Window, opts: RunOptions, listed: bool = False) -> str | None:
    """Why a run cannot sweep, known before it fetches anything (None: it may). A run that lists
    every id first (`listed`, mark_and_sweep) may sweep whatever its window."""
    if opts.dry_run:
        return "--dry-run"
    if opts.max_records:
        return f"--max-records {opts.max_records} (the run sees only part of the source)"
    if not listed and (window.mode not in ("full", "initial") or window.bounded):
        return f"windowed run ({window.mode}: {window.reason})"
    return None
