"""PostgreSQL COPY text format: values to their text, column-wise. Free of SQLAlchemy and drivers
so a mapping worker can encode with it (runtime/parallel.py); postgresql.py chooses the encoder
per column."""
from __future__ import annotations

from typing import Callable


def copy_text(s: str) -> str:
    """Escape a string for COPY's text format (backslash, tab, newline, carriage return)."""
    if "\\" in s:
        s = s.replace("\\", "\\\\")
    if "\t" in s:
        s = s.replace("\t", "\\t")
    if "\n" in s:
        s = s.replace("\n", "\\n")
    if "\r" in s:
        s = s.replace("\r", "\\r")
    return s


NULL = "\\N"
ColumnEncoder = Callable[[list], list[str]]


def ints(vals: list) -> list[str]:
    return [NULL if v is None else str(v) for v in vals]


def booleans(vals: list) -> list[str]:
    return [NULL if v is None else ("t" if v else "f") for v in vals]


def timestamps(vals: list) -> list[str]:
    # UTCDateTime's rule: naive values are UTC
    return [NULL if v is None else v.isoformat() if v.tzinfo is not None else v.isoformat() + "+00:00"
            for v in vals]


def dates(vals: list) -> list[str]:
    return [NULL if v is None else v.isoformat() for v in vals]


def texts(vals: list) -> list[str]:
    return [NULL if v is None else v if v.__class__ is str and "\\" not in v and "\t" not in v
            and "\n" not in v and "\r" not in v else copy_text(v if isinstance(v, str) else str(v))
            for v in vals]


SIMPLE = (ints, booleans, timestamps, dates, texts)  # module functions: they pickle by name


def encode_rows(names: list[str], encoders: list[ColumnEncoder], rows: list[dict]) -> str:
    """Rows as COPY text: one line per row, columns in `names` order, column-wise encoding."""
    columns = [enc([r.get(n) for r in rows]) for n, enc in zip(names, encoders)]
    lines = list(map("\t".join, zip(*columns)))
    lines.append("")
    return "\n".join(lines)
