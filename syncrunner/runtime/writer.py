"""Target tables: create from the spec, add columns for new fields, refuse silent type changes, and
write rows in sub-batches through a staging table, falling back to row by row when a bulk statement
fails so that one bad row costs one row."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from syncrunner.core.fingerprint import FP_COLUMN, uses_fingerprints
from syncrunner.core.redact import redact
from syncrunner.runtime.chunkmap import EncodedRows
from syncrunner.runtime.deletes import DELETED_AT, deleted_at_column, soft_deletes
from syncrunner.runtime.fplookup import fingerprint_column
from syncrunner.runtime.strategy import format_watermark
from syncrunner.spec.model import Spec
from syncrunner.targets.base import MergePlan, TargetDialect
from syncrunner.targets.registry import dialect_for
from syncrunner.targets.sqltypes import column_type, type_family

log = logging.getLogger("syncrunner.writer")


class SchemaChangeError(RuntimeError):
    """The spec asks for a column type the stored table does not have: never changed silently."""


@dataclass
class WriteResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0
    rejected: list[tuple[dict, str]] = field(default_factory=list)  # rows the database refused
    # differing rows not written: older than the stored row under the stale guard (with the reason)
    kept_stored: list[tuple[dict, str]] = field(default_factory=list)


def build_table(spec: Spec, metadata: sa.MetaData | None = None) -> sa.Table:
    md = metadata or sa.MetaData()
    cols = []
    for name, f in spec.fields.items():
        is_key = name in spec.target.key
        cols.append(sa.Column(
            name, column_type(f.type, max_length=f.max_length, precision=f.precision, scale=f.scale),
            primary_key=is_key, nullable=not (is_key or f.required), autoincrement=False))
    if soft_deletes(spec):
        cols.append(deleted_at_column())
    if uses_fingerprints(spec):
        cols.append(fingerprint_column())
    return sa.Table(spec.target.table, md, *cols)


def _batches(rows: list[dict], size: int) -> Iterator[list[dict]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


class Writer:
    def __init__(self, engine: sa.Engine, spec: Spec, *, force: bool, batch_size: int | None = None):
        self.engine = engine
        self.spec = spec
        self.force = force
        self.batch_size = batch_size or spec.target.batch_size
        self.table = build_table(spec)
        self.dialect: TargetDialect = dialect_for(engine)
        self.stage: sa.Table | None = None
        self.soft_deletes = soft_deletes(spec)
        # The table held no row when the run started: a batch is loaded straight into it until
        # the database refuses one (a key written earlier in this run), then merged as usual.
        self.direct = False
        self.empty = False  # the table held no row when the run started (set by prepare)

    def reset_session(self) -> None:
        """Forget per-session state (the temporary staging table) after a reconnect."""
        self.stage = None

    # -- schema ----------------------------------------------------------------------------------
    def schema_changes(self, conn: sa.Connection) -> tuple[str | None, list[sa.Column]]:
        """(CREATE TABLE DDL if the table is missing, columns to add). Raises SchemaChangeError."""
        insp = sa.inspect(conn)
        if not insp.has_table(self.table.name):
            ddl = str(sa.schema.CreateTable(self.table).compile(dialect=self.engine.dialect)).strip()
            return ddl, []
        stored = {c["name"]: c for c in insp.get_columns(self.table.name)}
        missing, conflicts = [], []
        for col in self.table.columns:
            if col.name not in stored:
                missing.append(col)
                continue
            want = type_family(col.type)
            have = type_family(stored[col.name]["type"])
            if want == have == "decimal" and self.engine.dialect.name == "sqlite":
                log.warning("%s: column %s.%s is %s, which SQLite stores as 8-byte floats (inexact); "
                            "tables created now hold decimals as exact text (DECIMAL_TEXT): recreate "
                            "the column to get exact values", self.spec.name, self.table.name, col.name,
                            stored[col.name]["type"])
            if want != have and (want, have) not in self._compatible():
                conflicts.append(f"column {col.name}: stored {have} ({stored[col.name]['type']}), "
                                 f"spec says {want}")
        if conflicts:
            raise SchemaChangeError(
                f"table {self.table.name} differs from {self.spec.path}: " + "; ".join(conflicts)
                + ". syncrunner never changes a column type silently: migrate the column yourself "
                  "(ALTER TABLE ...) or rename the field.")
        return None, missing

    def _compatible(self) -> set[tuple[str, str]]:
        """(spec family, stored family) pairs that are the same column: a decimal on SQLite is
        declared DECIMAL_TEXT, which reflects as text (see sqltypes.ExactDecimal)."""
        pairs = {("boolean", "integer")}
        if self.engine.dialect.name == "sqlite":
            pairs.add(("decimal", "string"))
        return pairs

    def add_column_sql(self, col: sa.Column) -> str:
        spec = sa.schema.CreateColumn(col).compile(dialect=self.engine.dialect)
        return f"ALTER TABLE {self.dialect.q(self.table.name)} ADD COLUMN {spec}"

    def prepare(self, conn: sa.Connection) -> list[str]:
        """Create or evolve the target table; returns what was done, for the log."""
        create, missing = self.schema_changes(conn)
        done = []
        if create:
            self.table.create(conn)
            done.append(f"created table {self.table.name}")
        for col in missing:
            conn.execute(sa.text(self.add_column_sql(col)))
            done.append(f"added column {self.table.name}.{col.name}")
        self.empty = bool(create) or conn.execute(
            sa.select(sa.literal(1)).select_from(self.table).limit(1)).first() is None
        # the key check reflects three catalogs (~35 ms): only for an empty table
        self.direct = self.dialect.loads_direct and self.empty and (bool(create) or self._unique_on_key(conn))
        return done

    def _unique_on_key(self, conn: sa.Connection) -> bool:
        """The stored table refuses a second row per key (what makes a straight load safe)."""
        insp, name, key = sa.inspect(conn), self.table.name, set(self.spec.target.key)
        unique = [insp.get_pk_constraint(name).get("constrained_columns") or []]
        unique += [u["column_names"] for u in insp.get_unique_constraints(name)]
        unique += [i["column_names"] for i in insp.get_indexes(name) if i.get("unique")]
        return any(set(cols) == key for cols in unique)

    # -- rows ------------------------------------------------------------------------------------
    def _plan(self) -> MergePlan:
        return MergePlan(target=self.table, stage=self.stage, columns=[c.name for c in self.table.columns],
                         keys=list(self.spec.target.key), cursor=self.spec.cursor_field, force=self.force,
                         fingerprint=FP_COLUMN if FP_COLUMN in self.table.c else None,
                         stale_guard=self.spec.source.serves_stale_copies)

    def write(self, conn: sa.Connection, rows: list[dict] | None, encoded: EncodedRows | None = None,
              rows_of: Callable[[], list[dict]] | None = None) -> WriteResult:
        """Upsert rows (inside the caller's transaction) in sub-batches of batch_size. With
        `encoded` (a mapping worker's COPY text per batch) no row dicts are needed unless a batch
        fails: then `rows_of()` gives the chunk's rows, in the same order, for the row-by-row retry."""
        if self.stage is None:
            self.stage = self.dialect.create_stage(conn, self.table)
        plan = self._plan()
        result = WriteResult()
        if encoded is None:
            if self.soft_deletes:  # an upserted row is live again: deleted_at goes back to NULL
                for r in rows:
                    r[DELETED_AT] = None
            loads = [(partial(self.dialect.load_stage, rows=batch), len(batch))
                     for batch in _batches(rows, self.batch_size)]
        else:  # deleted_at is not among the mapped fields: it was encoded as NULL
            loads = [(partial(self.dialect.load_stage_text, names=encoded.columns, text=text), n)
                     for text, n in encoded.texts]
        start = 0
        for load, n in loads:
            savepoint = conn.begin_nested()
            try:
                self._merge(conn, plan, load, n, result)
                savepoint.commit()
            except DBAPIError as e:
                if e.connection_invalidated:  # the target went away: no row is to blame
                    raise
                savepoint.rollback()
                log.warning("bulk upsert of %d rows into %s failed (%s); retrying row by row",
                            n, self.table.name, _short(e))
                if rows is None:
                    rows = rows_of()
                    if self.soft_deletes:
                        for r in rows:
                            r[DELETED_AT] = None
                for row in rows[start:start + n]:
                    sp = conn.begin_nested()
                    try:
                        self._merge(conn, plan, partial(self.dialect.load_stage, rows=[row]), 1, result)
                        sp.commit()
                    except DBAPIError as row_error:
                        sp.rollback()
                        result.rejected.append((row, f"database refused the row: {_short(row_error)}"))
            start += n
        return result

    def close(self, conn: sa.Connection) -> None:
        """Drop the staging table so a pooled connection goes back clean."""
        if self.stage is not None:
            try:
                with conn.begin():
                    self.dialect.drop_stage(conn, self.stage)
            except Exception as e:  # noqa: BLE001 - the connection may be gone; temp tables die with it
                log.debug("could not drop staging table %s: %s", self.stage.name, _short(e))
            self.stage = None

    def _merge(self, conn: sa.Connection, plan: MergePlan, load: Callable[..., None], n: int,
               result: WriteResult) -> None:
        """Stage one batch of `n` rows with `load(conn, stage)`, then merge it; into a table that
        was empty, load it straight in while the database accepts that."""
        if self.direct:
            if self.dialect.load_direct(conn, self.table, load):
                result.created += n
                return
            self.direct = False
            log.info("%s: a batch could not be loaded straight into %s (a key already stored); "
                     "merging through the staging table from here on", self.spec.name, self.table.name)
        self.dialect.clear_stage(conn, self.stage)
        load(conn, self.stage)
        created, updated, stale = self.dialect.merge_counted(conn, plan, n)
        result.created += created
        result.updated += updated
        result.stale += len(stale)
        result.kept_stored += [(self._as_mapped(row), self._stale_reason(row, stored)) for row, stored in stale]
        result.unchanged += n - created - updated - len(stale)
        if plan.fingerprint and created + updated + len(stale) < n:
            self.dialect.refresh_fingerprints(conn, plan)

    def _as_mapped(self, staged: dict) -> dict:
        return {name: staged.get(name) for name in self.spec.fields}

    def _stale_reason(self, staged: dict, stored: object) -> str:
        cursor = self.spec.cursor_field
        return (f"older than the stored row ({cursor} {format_watermark(staged.get(cursor))} < stored {format_watermark(stored)}): "
                "not written, as source.serves_stale_copies says the source may serve out-of-date copies; "
                "--force writes it")


def _short(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip().splitlines()
    return redact(text[0] if text else type(e).__name__)[:500]
