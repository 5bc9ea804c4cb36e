"""`syncrunner init --from-table SOURCE_URL TABLE --crm C --entity E`: a starting spec from a table.

The table is reflected (columns, types, primary key) and a cursor is guessed from update-time
column names. The spec refers to the source as `${<CRM>_DB_URL}`: the URL given on the command
line (which may hold a password) is never written to the file, only used to read the table."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from syncrunner.core.redact import redact, redact_url, register_url_password
from syncrunner.dburl import create_engine
from syncrunner.spec.load import check_spec, schema_path

# Update-time column names, best first: a cursor must move when a row changes, so creation times
# (which never move) are not guessed.
CURSOR_NAMES = ("updated_at", "modified_at", "last_modified", "last_modified_at", "updated_on",
                "modified_on", "date_modified", "last_updated", "updated", "modified", "changed_at",
                "last_update", "updatetime", "update_time", "modify_time")
CURSOR_PATTERN = re.compile(r"(updat|modif|chang)", re.I)
_ENV_REF = re.compile(r"^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$")


@dataclass
class Column:
    source: str         # name in the source table
    name: str           # target field name (lowercase identifier)
    type: str           # spec field type
    extra: dict         # max_length, precision, scale
    nullable: bool
    comment: str = ""


def env_var_for(crm: str) -> str:
    return f"{crm.upper()}_DB_URL"


def field_name(raw: str, taken: set[str]) -> str:
    """A target column name the schema accepts: lowercase, [a-z0-9_], not starting with a digit."""
    name = re.sub(r"[^a-z0-9_]+", "_", raw.lower()).strip("_") or "col"
    if name[0].isdigit():
        name = "c_" + name
    name = name[:60]
    base, n = name, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def spec_type(t: sa.types.TypeEngine) -> tuple[str | None, dict, str]:
    """(field type, extra keys, comment) for a reflected column type; None: the column is skipped."""
    if isinstance(t, mysql.TINYINT) and getattr(t, "display_width", None) == 1:
        return "integer", {}, "tinyint(1): use type: boolean if it only holds 0/1"
    if isinstance(t, sa.Boolean):
        return "boolean", {}, ""
    if isinstance(t, sa.Integer):
        return "integer", {}, ""
    if isinstance(t, sa.Float):
        return "decimal", {"precision": 24, "scale": 8}, "floating point in the source"
    if isinstance(t, sa.Numeric):
        extra = {}
        if t.precision:
            extra["precision"] = min(int(t.precision), 65)
        if t.scale is not None:
            extra["scale"] = min(int(t.scale), 30)
        return "decimal", extra, ""
    if isinstance(t, sa.DateTime):
        return "datetime", {}, ""
    if isinstance(t, sa.Date):
        return "date", {}, ""
    if isinstance(t, sa.Time):
        return "time", {}, ""
    if isinstance(t, sa.JSON):
        return "json", {}, ""
    if isinstance(t, (sa.LargeBinary, sa.types._Binary)):
        return None, {}, "binary"
    if isinstance(t, sa.String):
        length = getattr(t, "length", None)
        return "string", ({"max_length": int(length)} if length and length < 65536 else {}), ""
    return "string", {}, f"{t} read as text"


def reflect(engine: sa.Engine, table: str) -> tuple[list[Column], list[str], list[str]]:
    """(columns, source key columns, skipped-column notes)."""
    schema, _, name = table.rpartition(".")
    insp = sa.inspect(engine)
    try:
        cols = insp.get_columns(name, schema=schema or None)
    except sa.exc.NoSuchTableError:
        known = insp.get_table_names(schema=schema or None)
        hint = f"; tables there: {', '.join(known[:20])}{' ...' if len(known) > 20 else ''}" if known else ""
        raise click.ClickException(f"no table {table!r} in the source{hint}") from None
    taken: set[str] = set()
    columns, skipped = [], []
    for c in cols:
        ftype, extra, comment = spec_type(c["type"])
        if ftype is None:
            skipped.append(f"{c['name']} ({c['type']}): {comment} columns are not synced")
            continue
        columns.append(Column(c["name"], field_name(c["name"], taken), ftype, extra,
                              bool(c.get("nullable", True)), comment))
    key = list(insp.get_pk_constraint(name, schema=schema or None).get("constrained_columns") or [])
    if not key:  # a unique, non-null index will do
        for idx in insp.get_indexes(name, schema=schema or None):
            names = idx.get("column_names") or []
            by_name = {c.source: c for c in columns}
            if idx.get("unique") and names and all(n in by_name and not by_name[n].nullable for n in names):
                key = list(names)
                break
    return columns, key, skipped


def guess_cursor(columns: list[Column]) -> Column | None:
    timed = [c for c in columns if c.type in ("datetime", "date")]
    for wanted in CURSOR_NAMES:
        for c in timed:
            if c.source.lower() == wanted:
                return c
    return next((c for c in timed if CURSOR_PATTERN.search(c.source)), None)


def guess_validator(column: str) -> str | None:
    name = column.lower()
    if "email" in name or "e_mail" in name:
        return "email"
    if re.search(r"(phone|mobile|fax)", name):
        return "phone"
    return None


def render_spec(*, crm: str, entity: str, table: str, columns: list[Column], key: list[str],
                cursor: Column | None, timezone: str, target_table: str, dialect: sa.Dialect,
                schema_ref: str, skipped: list[str], cursor_note: str) -> str:
    by_source = {c.source: c for c in columns}
    quote = dialect.identifier_preparer.quote
    select = [quote(c.source) if c.source == c.name else f"{quote(c.source)} AS {c.name}" for c in columns]
    query_lines, line = [], "SELECT"
    for i, part in enumerate(select):
        piece = f" {part}{',' if i < len(select) - 1 else ''}"
        if len(line) + len(piece) > 96:
            query_lines.append(line)
            line = "      "
        line += piece
    query_lines.append(line)
    schema, _, name = table.rpartition(".")
    query_lines.append(f"FROM {(quote(schema) + '.') if schema else ''}{quote(name)}")
    key_fields = [by_source[k].name for k in key]
    width = max(len(c.name) for c in columns) + 1
    out = [
        f"# yaml-language-server: $schema={schema_ref}",
        f"# Written by `syncrunner init --from-table` from table {table} ({dialect.name}) on "
        f"{dt.date.today().isoformat()}.",
        "# Review it: field types, validators (email, phone, ...), record rules, the cursor and time zone.",
        f"crm: {crm}",
        f"entity: {entity}",
        f"description: {json.dumps(f'Rows of the {table} table.')}",
        f"enabled: ${{ENABLE_{crm.upper()}:-true}}",
        "source:",
        "  kind: sql",
        f"  url: ${{{env_var_for(crm)}}}",
        "  query: |",
        *("    " + q for q in query_lines),
    ]
    if cursor is not None:
        out.append(f"  cursor: {cursor.name}{'  # ' + cursor_note if cursor_note else ''}")
    else:
        out.append(f"  # no cursor: {cursor_note}")
    out += [
        f"  key: {_flow(key_fields)}",
        f"  timezone: {timezone}  # the zone of naive source timestamps; they are stored as UTC",
        "  chunk_size: 1000",
        "target:",
        f"  table: {target_table}",
        f"  key: {_flow(key_fields)}",
        "  batch_size: 500",
        "fields:",
    ]
    for c in columns:
        parts = [f"from: {c.name}", f"type: {c.type}"]
        if c.source in key:
            parts.append("required: true")
        parts += [f"{k}: {v}" for k, v in c.extra.items()]
        if c.type == "string" and (validator := guess_validator(c.source)):
            # a bad email must not cost the whole record: store NULL, keep the value in dead letters
            parts += [f"validators: [{validator}]", 'on_invalid: "null"']
        comment = f"  # {c.comment}" if c.comment else ""
        out.append(f"  {(c.name + ':').ljust(width)} {{{', '.join(parts)}}}{comment}")
    for note in skipped:
        out.append(f"  # skipped: {note}")
    return "\n".join(out) + "\n"


def _flow(names: list[str]) -> str:
    return "[" + ", ".join(names) + "]"


def resolve_source_url(arg: str) -> tuple[str, str | None]:
    """SOURCE_URL may be a URL or a reference to an environment variable (`$GENIUS_DB_URL`), which
    keeps a password out of shell history and `ps`. Returns (url, variable name or None)."""
    m = _ENV_REF.match(arg.strip())
    if m:
        value = os.environ.get(m.group(1))
        if not value:
            raise click.UsageError(f"environment variable {m.group(1)} is not set")
        return value, m.group(1)
    return arg, None


@click.command("init")
@click.option("--from-table", "from_table", nargs=2, required=True, metavar="SOURCE_URL TABLE",
              help="Source database (a URL, or $VAR to read it from the environment) and table "
                   "(`table` or `schema.table`).")
@click.option("--crm", required=True, help="CRM name (lowercase), e.g. genius.")
@click.option("--entity", required=True, help="Entity name (lowercase), e.g. appointments.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Where to write the spec  [default: specs/CRM/ENTITY.yaml].")
@click.option("--cursor", "cursor_name", default=None, help="Cursor column (default: guessed from update-time names).")
@click.option("--no-cursor", is_flag=True, help="No cursor: every run reads the whole table (small lookup tables).")
@click.option("--timezone", default="UTC", show_default=True, help="IANA zone of naive source timestamps.")
@click.option("--target-table", default=None, help="Target table  [default: CRM_ENTITY].")
@click.option("--force", is_flag=True, help="Overwrite an existing spec file.")
def init_command(from_table: tuple[str, str], crm: str, entity: str, out_path: str | None,
                 cursor_name: str | None, no_cursor: bool, timezone: str, target_table: str | None,
                 force: bool) -> None:
    """Write a starting spec by reflecting a source table; then lint it and say what to set."""
    for label, value in (("--crm", crm), ("--entity", entity)):
        if not re.fullmatch(r"[a-z][a-z0-9_]*", value):
            raise click.BadParameter("lowercase letters, digits and _ only, starting with a letter", param_hint=label)
    url, from_var = resolve_source_url(from_table[0])
    register_url_password(url)  # any error message below is redacted
    table = from_table[1]
    out = Path(out_path or Path("specs") / crm / f"{entity}.yaml")
    if out.exists() and not force:
        raise click.ClickException(f"{out} exists; use --force to overwrite it")
    columns, key, skipped, dialect = _reflect_table(url, table)
    cursor, note = _choose_cursor(columns, table, cursor_name, no_cursor)
    schema_ref = os.path.relpath(schema_path(), out.resolve().parent)
    text = render_spec(crm=crm, entity=entity, table=table, columns=columns, key=key, cursor=cursor,
                       timezone=timezone, target_table=target_table or f"{crm}_{entity}", dialect=dialect,
                       schema_ref=Path(schema_ref).as_posix(), skipped=skipped, cursor_note=note)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")

    var = env_var_for(crm)
    _, problems = check_spec(out, {**os.environ, var: url}, strict_env=True)
    errors = [p for p in problems if p.severity == "error"]
    click.echo(f"wrote {out}: {len(columns)} fields, key {', '.join(key)}, "
               f"cursor {cursor.name if cursor else '(none)'}")
    if cursor is not None and not cursor_name:
        click.echo(f"  cursor {cursor.name}: {note}")
    for s in skipped:
        click.echo(f"  skipped {s}")
    for p in problems:
        click.echo(f"  {p}", err=p.severity == "error")
    _say_next(out, var, url, from_var)
    sys.exit(1 if errors else 0)


def _reflect_table(url: str, table: str) -> tuple[list[Column], list[str], list[str], sa.Dialect]:
    """The table's columns, key, skipped columns and the database's dialect; a table without
    readable columns or a key cannot make a spec."""
    engine = create_engine(url)
    try:
        try:
            columns, key, skipped = reflect(engine, table)
        except sa.exc.SQLAlchemyError as e:
            raise click.ClickException(redact(f"cannot read {table} from {redact_url(url)}: "
                                              f"{type(e).__name__}: {e}")) from None
        dialect = engine.dialect
    finally:
        engine.dispose()
    if not columns:
        raise click.ClickException(f"{table} has no columns syncrunner can read")
    if not key:
        raise click.ClickException(f"{table} has no primary key or unique non-null index: a spec needs a key "
                                   "to upsert on (add one to the table, or write the spec by hand)")
    return columns, key, skipped, dialect


def _choose_cursor(columns: list[Column], table: str, cursor_name: str | None,
                   no_cursor: bool) -> tuple[Column | None, str]:
    """The cursor column (named, guessed or none) and a note on how it was chosen."""
    if no_cursor:
        return None, "--no-cursor: every run reads the whole table"
    if cursor_name:
        by_source = {c.source: c for c in columns}
        cursor = by_source.get(cursor_name) or next((c for c in columns if c.name == cursor_name), None)
        if cursor is None:
            raise click.BadParameter(f"no column {cursor_name!r} in {table}", param_hint="--cursor")
        return cursor, ""
    cursor = guess_cursor(columns)
    return cursor, ("guessed from the column name; it must change whenever a row changes" if cursor else
                    "no update-time column found, so every run reads the whole table; add `cursor:` if one exists")


def _say_next(out: Path, var: str, url: str, from_var: str | None) -> None:
    """How to point the spec at its source (the URL is never written to the file), then lint, plan, run."""
    current = os.environ.get(var)
    click.echo("")
    if current == url:
        click.echo(f"{var} is already set to this source.")
    else:
        if current:
            click.echo(f"note: {var} is set, but to another URL ({redact_url(current)}); the spec reads "
                       f"whatever {var} holds when it runs.")
        shown = f"${from_var}" if from_var else f"'{redact_url(url)}'"
        click.echo(f"The spec reads its source from ${{{var}}}. Set it before running (the URL is not "
                   f"written to the file{'; put the real password where *** is' if '***' in shown else ''}):")
        click.echo(f"  export {var}={shown}")
    click.echo("Then:")
    click.echo(f"  syncrunner lint {out}")
    click.echo(f"  syncrunner plan {out}")
    click.echo(f"  syncrunner run {out}")
