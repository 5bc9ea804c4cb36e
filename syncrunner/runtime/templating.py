"""The one Jinja environment of syncrunner: SQL query templates, field expressions and record rules.

SQL templates see `since` / `until` as bind-parameter placeholders, never as values."""
from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta, nodes

WINDOW_PARAMS = {"since": "sr_since", "until": "sr_until"}
_QUOTED_PLACEHOLDER = re.compile(r"'[^']*:sr_(since|until)\b[^']*'|\"[^\"]*:sr_(since|until)\b[^\"]*\"")


def combine(date: Any, time: Any) -> dt.datetime | None:
    """A date and a time-of-day (MySQL TIME arrives as a timedelta) into one datetime."""
    if date is None:
        return None
    if isinstance(date, str):
        date = dt.date.fromisoformat(date[:10])
    if isinstance(date, dt.datetime):
        date = date.date()
    if time is None:
        return dt.datetime.combine(date, dt.time())
    if isinstance(time, dt.timedelta):
        return dt.datetime.combine(date, dt.time()) + time
    if isinstance(time, str):
        time = dt.time.fromisoformat(time)
    return dt.datetime.combine(date, time)


def coalesce(*values: Any) -> Any:
    for v in values:
        if v is not None and v != "":
            return v
    return None


def epoch_ms(value: Any) -> int | None:
    """A datetime as epoch milliseconds (HubSpot filters); naive values are taken as UTC."""
    if value is None or isinstance(value, jinja2.Undefined):
        return None
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return int(round(value.timestamp() * 1000))


def epoch_s(value: Any) -> int | None:
    ms = epoch_ms(value)
    return None if ms is None else ms // 1000


def iso(value: Any) -> str | None:
    """ISO 8601 text of a date or datetime (aware values keep their offset)."""
    if value is None or isinstance(value, jinja2.Undefined):
        return None
    return value.isoformat()


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(undefined=jinja2.ChainableUndefined, autoescape=False, keep_trailing_newline=True)
    env.globals.update(combine=combine, coalesce=coalesce)
    env.filters.update(epoch_ms=epoch_ms, epoch_s=epoch_s, iso=iso)
    return env


ENV = make_env()


class Placeholder(str):
    """Renders as `:name` so the SQL text carries a bind parameter, not the value."""


@lru_cache(maxsize=64)
def render_sql(template: str, windowed: bool) -> str:
    """Render a query template; the window enters only as :sr_since / :sr_until bind parameters.
    Cached: the text depends on nothing else, and a source builds two queries per chunk (Jinja
    compiling the template anew each time cost ~1 ms of the reading thread per query)."""
    ctx = {k: Placeholder(f":{v}") for k, v in WINDOW_PARAMS.items()}
    ctx["window"] = windowed
    return ENV.from_string(template).render(**ctx)


def sql_template_problems(template: str) -> list[str]:
    """Why a query template is unsafe or broken (empty when fine)."""
    try:
        ast = ENV.parse(template)
    except jinja2.TemplateSyntaxError as e:
        return [f"query template does not compile (template line {e.lineno}): {e.message}"]
    problems = []
    unknown = meta.find_undeclared_variables(ast) - set(WINDOW_PARAMS) - {"window"}
    if unknown:
        problems.append(f"query template uses unknown variables {sorted(unknown)}; only since, until and window exist")
    for out in ast.find_all(nodes.Output):
        for node in out.nodes:
            if isinstance(node, nodes.TemplateData):
                continue
            if not (isinstance(node, nodes.Name) and node.name in WINDOW_PARAMS):
                problems.append("query template prints an expression other than {{ since }} / {{ until }}; "
                                "values must travel as bind parameters")
    for windowed in (True, False):
        try:
            rendered = render_sql(template, windowed)
        except Exception as e:  # noqa: BLE001 - any render error is a spec problem
            problems.append(f"query template fails to render: {e}")
            break
        if _QUOTED_PLACEHOLDER.search(rendered):
            problems.append("{{ since }} / {{ until }} must not be inside quotes: they are bind parameters")
            break
    return problems


def compile_expression(source: str):
    """Compile a Jinja expression once; call the result with the record as keyword context."""
    return ENV.compile_expression(source, undefined_to_none=True)


def expression_problem(source: str) -> str | None:
    try:
        compile_expression(source)
    except jinja2.TemplateSyntaxError as e:
        return f"expression does not compile: {e.message}"
    return None
