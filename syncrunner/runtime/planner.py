"""`syncrunner plan`: what a run would do, without moving data."""
from __future__ import annotations

import json

from ..adapters.sources.base import make_source
from ..redact import redact, redact_url
from ..spec import Spec
from . import history
from .strategy import RunOptions, decide
from .target import make_engine, target_exists
from .writer import Writer


def plan_text(spec: Spec, opts: RunOptions, target_url: str) -> str:
    engine = make_engine(target_url)
    lines = [f"spec:    {spec.path} ({spec.name}, digest {spec.digest})",
             f"target:  {redact_url(target_url)} table {spec.target.table}"]
    try:
        if target_exists(target_url):
            with engine.connect() as conn:
                window = decide(spec, opts, conn if history.tables_exist(conn) else None)
                create, missing = Writer(engine, spec, force=opts.force).schema_changes(conn)
        else:  # a SQLite file that does not exist yet: connecting would create it
            window = decide(spec, opts, None)
            import sqlalchemy as sa
            w = Writer(engine, spec, force=opts.force)
            create = str(sa.schema.CreateTable(w.table).compile(dialect=engine.dialect)).strip()
            missing = []
        lines.append(f"window:  {window.mode}: since={window.as_config()['since']} until={window.as_config()['until']}")
        lines.append(f"why:     {window.reason}")
        if window.position:
            lines.append(f"resume:  after {json.dumps(window.position)}")
        source = make_source(spec)
        try:
            desc = source.describe(window)
        finally:
            source.close()
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
