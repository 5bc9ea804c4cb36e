"""`syncrunner plan`: what a run would do, without moving data: the window (resume included, as
`run` would take it), the column-by-column mapping checked against the query's real columns, the
first fetch and the DDL."""
from __future__ import annotations

import json

import sqlalchemy as sa

from syncrunner.core.redact import redact, redact_url
from syncrunner.runtime.columns import check_columns, mapping_lines
from syncrunner.runtime.strategy import RunOptions, decide_readonly, describe_position
from syncrunner.runtime.target import make_engine, target_exists
from syncrunner.runtime.writer import Writer
from syncrunner.sources.registry import make_source
from syncrunner.spec.model import Spec, SpecError
from syncrunner.spec.params import coerce, show


def plan_text(spec: Spec, opts: RunOptions, target_url: str) -> str:
    """The plan; raises SpecError when the spec names a column the source query does not return."""
    engine = make_engine(target_url)
    lines = [f"spec:    {spec.path} ({spec.name}, digest {spec.digest})",
             f"target:  {redact_url(target_url)} table {spec.target.table}"]
    try:
        exists = target_exists(target_url)
        window, note = decide_readonly(spec, opts, engine, exists)
        if exists:
            with engine.connect() as conn:
                create, missing = Writer(engine, spec, force=opts.force).schema_changes(conn)
        else:  # a SQLite file that does not exist yet: connecting would create it
            w = Writer(engine, spec, force=opts.force)
            create = str(sa.schema.CreateTable(w.table).compile(dialect=engine.dialect)).strip()
            missing = []
        bounds = " ".join(f"{k}={v}" for k, v in window.as_config().items() if k != "mode")
        lines.append(f"window:  {window.mode}: {bounds}")
        if note:
            lines.append(f"note:    {note}")
        lines.append(f"why:     {window.reason}")
        lines += param_lines(spec)
        if window.position:
            lines.append(f"resume:  run {window.resume_run}'s checkpoint: after {describe_position(window.position)}")
        source = make_source(spec)
        try:
            columns = check_columns(spec, source)
            desc = source.describe(window)
        finally:
            source.close()
        lines.append("mapping (target column, type <- source):")
        lines += mapping_lines(spec, columns)
        lines.append("first fetch:")
        lines += ["  " + line for line in json.dumps(desc, indent=2, default=str).splitlines()]
        if create:
            lines.append("target table is missing; it would be created:")
            lines += ["  " + line for line in create.splitlines()]
        elif missing:
            w = Writer(engine, spec, force=opts.force)
            lines.append("columns to add:")
            lines += ["  " + w.add_column_sql(c) for c in missing]
        else:
            lines.append("target table matches the spec")
    finally:
        engine.dispose()
    return redact("\n".join(lines))


def param_lines(spec: Spec) -> list[str]:
    """The run parameters in effect, each with its default and whether it narrows the fetch."""
    if not spec.params:
        return []
    out = ["params:"]
    narrowed = {n.split("=", 1)[0] for n in spec.narrowed_by}
    for name, p in spec.params.items():
        note = "narrows the fetch: no delete sweep" if name in narrowed else "default" \
            if show(spec.param_values.get(name)) == show(coerce(p, p.default)) else "does not narrow"
        out.append(f"  {name} = {show(spec.param_values.get(name)) or '(none)'} ({p.type}; {note})"
                   + (f": {p.description}" if p.description else ""))
    return out


__all__ = ["plan_text", "SpecError"]
