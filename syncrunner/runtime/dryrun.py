"""What a real run would write, found by reading the target only (`run --dry-run`): each mapped
row against its stored row, with the merge's own rules (targets/base.py): a new key is
created; under the stale guard (source.serves_stale_copies) an incoming row older than the stored
one is stale (kept as stored, a failure) unless --force; a row equal in every compared column is
unchanged; any other is updated. A row whose stored
fingerprint is its source row's is unchanged, as a real run skips it (core/fingerprint.py).
Nothing is written."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from syncrunner.core.fingerprint import FP_COLUMN, Fingerprinter, uses_fingerprints
from syncrunner.runtime.deletes import DELETED_AT
from syncrunner.runtime.writer import Writer
from syncrunner.spec.model import Spec

KEYS_PER_QUERY = 500


@dataclass
class Preview:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    stale: int = 0


class TargetPreview:
    def __init__(self, engine: sa.Engine, spec: Spec, *, force: bool, skip_validation: bool,
                 target_exists: bool):
        """`target_exists`: False for a SQLite file not created yet (connecting would create it)."""
        writer = Writer(engine, spec, force=force)
        plan = writer._plan()
        self.engine = engine
        self.table = writer.table
        self.keys = plan.keys
        self.cursor = plan.cursor if plan.guarded else None
        self.compare = [c for c in plan.compare if c != DELETED_AT]
        self.deletes = DELETED_AT in self.table.c
        self.fingerprinter = Fingerprinter(spec, skip_validation=skip_validation) \
            if uses_fingerprints(spec) and not force else None
        self.exists = False
        if target_exists:
            with engine.connect() as conn:
                self.exists = sa.inspect(conn).has_table(self.table.name)

    def count(self, rows: list[dict]) -> Preview:
        out = Preview()
        stored = self._stored(rows) if self.exists and rows else {}
        for row in rows:
            old = stored.get(tuple(row[k] for k in self.keys))
            if old is None:
                out.created += 1
            elif row.get(FP_COLUMN) is not None and row[FP_COLUMN] == old.get(FP_COLUMN):
                out.unchanged += 1
            elif self._stale(row, old):
                out.stale += 1
            elif not self._newer(row, old):
                out.unchanged += 1
            elif any(row.get(c) != old[c] for c in self.compare) or (self.deletes and old[DELETED_AT] is not None):
                out.updated += 1
            else:
                out.unchanged += 1
        return out

    def fingerprints(self, records: list[dict]) -> list[int] | None:
        """The chunk's source-row fingerprints, when a real run would look them up."""
        return self.fingerprinter.of(records) if self.fingerprinter is not None else None

    def _stale(self, row: dict, old: dict) -> bool:
        if self.cursor is None:
            return False
        new, have = row.get(self.cursor), old[self.cursor]
        return new is not None and have is not None and new < have

    def _newer(self, row: dict, old: dict) -> bool:
        """The merge's `stored IS NULL OR incoming >= stored` (NULL compares as not newer)."""
        if self.cursor is None or old[self.cursor] is None:
            return True
        new = row.get(self.cursor)
        return new is not None and new >= old[self.cursor]

    def _stored(self, rows: list[dict]) -> dict[tuple, dict[str, Any]]:
        cols = [self.table.c[k] for k in self.keys]
        key_of = cols[0] if len(cols) == 1 else sa.tuple_(*cols)
        keys = [tuple(r[k] for k in self.keys) for r in rows]
        found: dict[tuple, dict[str, Any]] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(keys), KEYS_PER_QUERY):
                part = keys[i:i + KEYS_PER_QUERY]
                values = [k[0] for k in part] if len(cols) == 1 else part
                for r in conn.execute(sa.select(self.table).where(key_of.in_(values))).mappings():
                    found[tuple(r[k] for k in self.keys)] = dict(r)
        return found
