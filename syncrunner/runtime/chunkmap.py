"""Map and validate one chunk of records: the work the engine does on its own thread and the
mapping worker processes (runtime/parallel.py) do on theirs. Pure: no database, no engine
state, so both give the same rows, dead letters and counts for the same records."""
from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Callable, Sequence

from syncrunner.core.coerce import DataError
from syncrunner.core.deadletter import dead_letter
from syncrunner.core.fingerprint import FP_COLUMN
from syncrunner.core.mapping import Mapper
from syncrunner.core.records import BadRecord
from syncrunner.core.stats import Stats
from syncrunner.spec.model import Spec


@dataclass
class BadValue:
    """A rejected record or a nulled value, for the run's log (the dead letter keeps it all)."""
    key: str | None
    field: str | None
    value: Any
    reason: str


@dataclass
class MappedChunk:
    """One chunk after mapping: the rows to write (or, from a worker, their COPY text per write
    batch), the dead letters, the counts, and what the engine needs without the rows."""
    rows: list[dict] | None
    dead: list[dict]
    bad: list[BadValue]
    stats: Stats
    max_cursor: Any = None                 # the largest cursor among the rows
    keys: list[tuple] | None = None        # each row's target key, in order (when asked for)
    encoded: "EncodedRows | None" = None   # set by a mapping worker instead of rows


@dataclass
class EncodedRows:
    """Rows already encoded for the target's bulk load: `texts` holds (COPY text, row count) per
    write batch, in row order; `columns` names the text's columns in order."""
    columns: list[str]
    texts: list[tuple[str, int]] = field(default_factory=list)


def key_text(values: list[Any]) -> str | None:
    """A record's key as one string for the dead-letter table and the log."""
    if all(v is None for v in values):
        return None
    return ",".join("" if v is None else str(v) for v in values)


def max_cursor(rows: Sequence[dict], cursor: str | None, current: Any = None) -> Any:
    if not cursor:
        return current
    best = current
    for r in rows:
        v = r.get(cursor)
        if v is not None and (best is None or v > best):
            best = v
    return best


def map_chunk(spec: Spec, mapper: Mapper, key_getters: list[Callable[[dict], Any]], records: Sequence[dict],
              run_id: int, *, skip: dict[int, tuple] | set[int] | frozenset = frozenset(),
              fps: list[int] | None = None) -> MappedChunk:
    """Map every record not in `skip`; a record that cannot land becomes a dead letter with its
    reason, a value nulled by `on_invalid: null` a dead letter beside its landed row. The same key
    twice in one chunk: the later record wins (counted as a duplicate)."""
    cs = Stats(fetched=len(records), unchanged=len(skip), skipped=len(skip))
    good: dict[tuple, dict] = {}
    dead: list[dict] = []
    bad: list[BadValue] = []
    key_fields = spec.target.key
    warnings = mapper.warnings  # filled by map() for values nulled by on_invalid: null
    map_record = mapper.map
    key_of = itemgetter(*key_fields) if len(key_fields) > 1 else None
    k0 = key_fields[0]
    crm, entity = spec.crm, spec.entity
    for i in range(len(records)):
        if i in skip:
            continue
        rec = records[i]
        try:
            if rec.__class__ is BadRecord:
                raise DataError(None, rec.reason)
            row = map_record(rec)
            if fps is not None:
                row[FP_COLUMN] = fps[i]
            key = key_of(row) if key_of else (row[k0],)
            if None in key:
                raise DataError(k0, "key value is missing")
        except DataError as e:
            del warnings[:]
            cs.failed += 1
            skey = key_text([g(rec) for g in key_getters])
            dead.append(dead_letter(run_id, crm, entity, skey, e.field, e.reason, rec))
            bad.append(BadValue(skey, e.field, e.value, e.reason))
            continue
        if warnings:  # the record lands; the original values are kept beside it
            skey = key_text([g(rec) for g in key_getters])
            for w in warnings:
                cs.warnings += 1
                dead.append(dead_letter(run_id, crm, entity, skey, w.field,
                                         f"stored NULL: {w.reason}", rec, action="nulled"))
                bad.append(BadValue(skey, w.field, w.value, f"{w.reason}; stored NULL"))
            del warnings[:]
        if key in good:
            cs.duplicates += 1
        good[key] = row
    rows = list(good.values())
    return MappedChunk(rows, dead, bad, cs, max_cursor(rows, spec.cursor_field), list(good))
