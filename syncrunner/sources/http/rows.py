"""Tabular responses (`source.rows`): APIs that answer with rows as arrays of cells under a header row
(Google Sheets `values.get`, report exports) instead of objects. Each row becomes a record keyed by
the column names, so the rest of the spec (fields' `from`, key, cursor) reads it like any record.

    rows:
      header: first_row       # the first row of each response names the columns (or a list of names)
      names: snake_case       # optional: "Cost ($)" -> cost; as_is (default) keeps the header text
      row_number: sheet_row   # optional: each record gets its row number under this name
      first_row: 1            # the row number of the response's first row (the range's first row)

Rows may be ragged: cells missing at the end of a row (Sheets leaves out trailing empty cells) and
empty cells are both absent (None). Rows with no value at all are skipped (counted). Cells under a
column without a name are ignored (counted). A field, key or cursor that reads a column the header
does not have fails the run with the column's name, the spec file and the field: a column renamed in
the sheet must not silently become a column of NULLs."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from syncrunner.spec.model import Spec


class RowsError(Exception):
    """The header row does not fit the spec (missing, renamed or duplicated columns)."""


def snake_case(name: str) -> str:
    """`Cost ($)` -> `cost`, `Event Start Date` -> `event_start_date`, `UTM-Campaign` -> `utm_campaign`."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


@dataclass
class RowTable:
    header: str | list[str]            # "first_row" or fixed column names
    names: str = "as_is"
    row_number: str | None = None
    first_row: int = 1
    counts: dict[str, int] = field(default_factory=dict)
    _checked: tuple | None = None      # the header last checked against the spec

    @classmethod
    def from_options(cls, options: dict | None) -> "RowTable | None":
        if not options:
            return None
        return cls(options.get("header", "first_row"), options.get("names", "as_is"),
                   options.get("row_number"), int(options.get("first_row", 1)))

    def records(self, rows: list | None, spec: Spec, where: str) -> list[dict]:
        """The records of one response's rows (`rows` is what `records:` found: a list of lists)."""
        rows = rows or []
        if not all(isinstance(r, list) for r in rows):
            raise RowsError(f"{spec.name}: {where}: rows: the records are not all arrays of cells")
        first = self.first_row
        if self.header == "first_row":
            if not rows or not any(_present(c) for c in rows[0]):
                raise RowsError(f"{spec.name}: {where}: rows: the response has no header row (an empty "
                                f"range, or an empty first row); expected the column names in row {first}")
            head, rows, first = [str(c).strip() if _present(c) else "" for c in rows[0]], rows[1:], first + 1
        else:
            head = list(self.header)
        columns = [snake_case(h) if self.names == "snake_case" else h for h in head]
        self._check(columns, head, spec, where)
        out = []
        for i, cells in enumerate(rows):
            rec = {}
            for name, cell in zip(columns, cells):
                if name:
                    rec[name] = cell if _present(cell) else None
                elif _present(cell):
                    self._count("cells_without_header")
            if not any(v is not None for v in rec.values()):
                self._count("empty_rows")
                continue
            for name in columns[len(cells):]:
                if name:
                    rec[name] = None  # a ragged row: the trailing cells were left out
            if len(cells) > len(columns) and any(_present(c) for c in cells[len(columns):]):
                self._count("cells_without_header")
            if self.row_number:
                rec[self.row_number] = first + i
            out.append(rec)
        return out

    def _check(self, columns: list[str], head: list[str], spec: Spec, where: str) -> None:
        """Every column the spec reads must be in the header, once (checked once per header)."""
        if self._checked == tuple(columns):
            return
        seen: set[str] = set()
        dupes = sorted({c for c in columns if c and (c in seen or seen.add(c))})
        shown = ", ".join(repr(h) for h in head if h)
        needed = _columns_read(spec, self.row_number)
        for column, key in needed:
            if column not in columns:
                hint = _close(column, [c for c in columns if c])
                raise RowsError(f"{spec.path}: {key}: column {column!r} is not in the header row of "
                                f"{where}{hint} (header: {shown}); was it renamed or removed in the "
                                f"source? Fix the sheet's header or the spec")
            if column in dupes:
                raise RowsError(f"{spec.path}: {key}: column {column!r} appears more than once in the "
                                f"header row of {where} (header: {shown}); make the names unique")
        self._checked = tuple(columns)

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1


def _present(cell: Any) -> bool:
    return cell is not None and cell != ""


def _columns_read(spec: Spec, row_number: str | None) -> list[tuple[str, str]]:
    """(column, spec key) for every column a field, the key or the cursor reads by name."""
    out: list[tuple[str, str]] = []
    for name, f in spec.fields.items():
        if f.expr is None:
            out.append((_top(f.source_path or name), f"fields.{name}.from"))
    for k in spec.source.key:
        out.append((_top(k), "source.key"))
    if spec.source.cursor:
        out.append((_top(spec.source.cursor), "source.cursor"))
    return [(c, k) for c, k in out if c and c != row_number]


def _top(path: str) -> str:
    """The column a path starts with: `Cost`, `"Event Start"` (a quoted jmespath name), `a.b` -> a."""
    path = path.strip()
    if path.startswith('"'):
        end = path.find('"', 1)
        return path[1:end] if end > 0 else path
    return re.split(r"[.\[|]", path, maxsplit=1)[0].strip()


def _close(column: str, options: list[str]) -> str:
    import difflib
    close = difflib.get_close_matches(column, options, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
