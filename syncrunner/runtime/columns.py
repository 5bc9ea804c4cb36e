"""The spec's source names against the columns the SQL query really returns (known from one
`LIMIT 0` probe): a `from:`, `cursor:`, `key:` or expression name that is no column would read NULL
for every record, silently. Each is reported as file:line: key: message, as lint reports."""
from __future__ import annotations

import difflib
import logging
from pathlib import Path

from syncrunner.core.mapping import plain_path
from syncrunner.core.redact import redact
from syncrunner.spec.model import Problem, Spec, SpecError

log = logging.getLogger("syncrunner")


def _located(spec: Spec):
    from syncrunner.spec.yamlpos import load_located
    try:
        return load_located(Path(spec.path).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - positions are a courtesy: line 1 if the file changed
        return None


def expression_names(expr: str) -> set[str]:
    """The record names a field expression reads (Jinja's undeclared variables, minus helpers)."""
    from jinja2 import meta

    from syncrunner.core.templating import ENV
    try:
        names = meta.find_undeclared_variables(ENV.parse("{{ " + expr + " }}"))
    except Exception:  # noqa: BLE001 - lint reports an expression that does not parse
        return set()
    return {n for n in names if n not in ENV.globals}


def _unknown(name: str, columns: list[str]) -> str:
    close = difflib.get_close_matches(name, columns, n=1) or \
        [c for c in columns if c.lower() == name.lower()][:1]
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    shown = ", ".join(columns[:30]) + (" ..." if len(columns) > 30 else "")
    return f"'{name}' is not a column of the source query's result{hint}; it returns: {shown}"


def column_problems(spec: Spec, columns: list[str]) -> list[Problem]:
    """Every spec name that the query's result `columns` do not have."""
    loc = _located(spec)
    have = set(columns)
    problems: list[Problem] = []

    def add(path: tuple, name: str) -> None:
        line = loc.line_of(path) if loc is not None else 1
        problems.append(Problem(spec.path, line, ".".join(map(str, path)), _unknown(name, columns)))

    for name, f in spec.fields.items():
        if f.expr is not None:
            for used in sorted(expression_names(f.expr) - have):
                add(("fields", name, "expr"), used)
            continue
        path = f.source_path or name
        head = path.split(".")[0] if plain_path(path) else None  # a JSON column's dotted path
        if head is not None and head not in have:
            add(("fields", name, "from") if f.source_path else ("fields", name), head)
    if spec.source.cursor and spec.source.cursor not in have:
        add(("source", "cursor"), spec.source.cursor)
    for i, k in enumerate(spec.source.key):
        if k not in have:
            add(("source", "key", i) if len(spec.source.key) > 1 else ("source", "key"), k)
    return problems


def check_columns(spec: Spec, source) -> list[str] | None:
    """The query's result columns (None for a source that cannot tell); raises SpecError when the
    spec names one the query does not return."""
    probe = getattr(source, "result_columns", None)
    if probe is None:
        return None
    try:
        columns = probe()
    except Exception as e:  # noqa: BLE001 - an unreachable source or a bad query: the run says so
        log.debug("%s: no column probe: %s", spec.name, redact(e))
        return None
    if columns is not None:
        problems = column_problems(spec, columns)
        if problems:
            raise SpecError(problems)
    return columns


def mapping_lines(spec: Spec, columns: list[str] | None) -> list[str]:
    """`plan`'s column-by-column mapping: target column <- source column or expression, type."""
    width = max(len(n) for n in spec.fields)
    lines = []
    for name, f in spec.fields.items():
        src = f"expr {f.expr}" if f.expr is not None else (f.source_path or name)
        flags = " required" if f.required else ""
        flags += " (key)" if name in spec.target.key else ""
        flags += " (cursor)" if name == spec.cursor_field else ""
        lines.append(f"  {name:<{width}}  {f.type:<8} <- {src}{flags}")
    if columns is not None:
        used = {(f.source_path or n).split(".")[0] for n, f in spec.fields.items() if f.expr is None}
        for f in spec.fields.values():
            if f.expr is not None:
                used |= expression_names(f.expr)
        unused = [c for c in columns if c not in used]
        if unused:
            lines.append(f"  (query columns not mapped: {', '.join(unused)})")
    return lines
