"""Semantic checks a JSON Schema cannot express: mapped cursor and keys, compilable templates and
expressions that stay inside the template sandbox (checked without rendering them), safe use of
the window in SQL, valid time zones and regexes."""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from syncrunner.core.mapping import plain_path
from syncrunner.core.requests import RequestTemplate, context
from syncrunner.core.templating import expression_problems, sql_template_problems, template_problems
from syncrunner.spec.model import Problem, strings_in
from syncrunner.spec.lintparams import param_problems
from syncrunner.spec.yamlpos import Located


Add = Callable[..., None]  # add(path, message, severity="error")


def semantic_problems(data: dict, loc: Located, fname: str) -> list:
    problems: list[Problem] = []

    def add(path: tuple, msg: str, severity: str = "error") -> None:
        problems.append(Problem(fname, loc.line_of(path), ".".join(map(str, path)), msg, severity))

    fields = data.get("fields") if isinstance(data.get("fields"), dict) else {}
    source = data.get("source") if isinstance(data.get("source"), dict) else {}
    target = data.get("target") if isinstance(data.get("target"), dict) else {}
    direct = _field_problems(fields, add)
    _key_problems(source, target, fields, direct, add)
    _source_problems(source, fields, direct, add)
    param_problems(data.get("params"), source, add)
    deletes = data.get("deletes")
    if isinstance(deletes, dict):
        _delete_problems(deletes, source, target, direct, add)
    if isinstance(deletes, dict) and deletes.get("action", "soft") == "soft" and "deleted_at" in fields:
        add(("fields", "deleted_at"), "soft deletes (deletes.action: soft) manage the column deleted_at "
                                      "themselves; rename this field")

    if "_sr_fingerprint" in fields:
        add(("fields", "_sr_fingerprint"), "_sr_fingerprint is syncrunner's own column (row fingerprints); "
                                           "rename this field")

    for i, rule in enumerate(data.get("validate") or []):
        if isinstance(rule, dict) and isinstance(rule.get("rule"), str):
            for msg in expression_problems(rule["rule"]):
                add(("validate", i, "rule"), msg)
    return problems


def _field_problems(fields: dict, add: Add) -> dict[str, str]:
    """Each field's expression, path and regex; returns source path -> target field, for the
    fields copied straight from a source path."""
    direct: dict[str, str] = {}
    for name, f in fields.items():
        if not isinstance(f, dict):
            continue
        if "expr" in f:
            if isinstance(f["expr"], str):
                for msg in expression_problems(f["expr"]):
                    add(("fields", name, "expr"), msg)
        else:
            path = f.get("from", name)
            if isinstance(path, str):
                direct.setdefault(path, name)
                if not plain_path(path):  # a plain name or dotted path is always valid
                    import jmespath
                    try:
                        jmespath.compile(path)
                    except jmespath.exceptions.JMESPathError as e:
                        add(("fields", name, "from"), f"not a valid jmespath expression: {e}{_quote_hint(path)}")
        if isinstance(f.get("regex"), str):
            try:
                re.compile(f["regex"])
            except re.error as e:
                add(("fields", name, "regex"), f"regex does not compile: {e}")
        if "number_format" in f and f.get("type") not in ("integer", "decimal"):
            add(("fields", name, "number_format"), f"number_format applies to integer and decimal fields, "
                                                   f"not {f.get('type')}")
        if "date_format" in f and f.get("type") not in ("date", "datetime"):
            add(("fields", name, "date_format"), f"date_format applies to date and datetime fields, "
                                                 f"not {f.get('type')}")
        elif isinstance(f.get("date_format"), str) and "%" not in f["date_format"]:
            add(("fields", name, "date_format"), "a strptime format has directives such as %Y, %m, %d")
        if f.get("required") and "default" in f:
            add(("fields", name, "default"), "a required field with a default can never be missing", "warning")
    return direct


_UNQUOTED = re.compile(r'(^|\.)([0-9][^."]*|[A-Za-z_][A-Za-z0-9_]*[- ][^."]*)')


def _quote_hint(path: str) -> str:
    """The fix for the usual cause: a key that starts with a digit or holds a dash or space."""
    m = _UNQUOTED.search(path)
    return (f"\n(a key that starts with a digit or holds a dash or space must be quoted: quote it in double "
            f"quotes, '\"{m.group(2)}\"', and the whole path in single quotes in YAML)") if m else ""


def _key_problems(source: dict, target: dict, fields: dict, direct: dict[str, str], add: Add) -> None:
    """The cursor and the keys must be mapped fields of a usable type."""
    cursor = source.get("cursor")
    if isinstance(cursor, str) and fields:
        if cursor not in direct:
            add(("source", "cursor"), f"cursor '{cursor}' is not mapped by any field "
                                      f"(add a field with from: {cursor})")
        else:
            ctype = fields[direct[cursor]].get("type")
            if ctype not in ("datetime", "date", "integer", "decimal", "string", None):
                add(("source", "cursor"), f"cursor field '{direct[cursor]}' has type {ctype}; "
                                          "use datetime, date or integer")
    if source.get("sorted_by_cursor") is True and not source.get("cursor"):
        add(("source", "sorted_by_cursor"), "sorted_by_cursor: true needs a cursor: (the field the "
                                            "records are sorted by); add source.cursor")
    if source.get("serves_stale_copies") is True and not cursor:
        add(("source", "serves_stale_copies"), "the stale guard compares cursors: it needs source.cursor")
    skey = source.get("key")
    for k in ([skey] if isinstance(skey, str) else skey if isinstance(skey, list) else []):
        if isinstance(k, str) and fields and k not in direct:
            add(("source", "key"), f"source key '{k}' is not mapped by any field")
        if isinstance(k, str) and "." in k and source.get("kind") != "http":
            add(("source", "key"), f"source key '{k}': a {source.get('kind')} source's key is a column name; "
                                   f"only an http source's key may be a dotted path")
    tkey = target.get("key")
    for k in ([tkey] if isinstance(tkey, str) else tkey if isinstance(tkey, list) else []):
        if isinstance(k, str) and fields and k not in fields:
            add(("target", "key"), f"target key '{k}' is not one of the fields")
        elif isinstance(k, str) and isinstance(fields.get(k), dict) and fields[k].get("type") == "json":
            add(("target", "key"), f"target key '{k}' cannot be a json field")


def _source_problems(source: dict, fields: dict, direct: dict[str, str], add: Add) -> None:
    """The time zone, the SQL query and URL, the HTTP request templates."""
    tz = source.get("timezone")
    if isinstance(tz, str):
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            add(("source", "timezone"), f"unknown time zone '{tz}' (use an IANA name such as America/New_York)")
    if source.get("kind") == "sql" and isinstance(source.get("query"), str):
        for msg in sql_template_problems(source["query"]):
            add(("source", "query"), msg)
    fmt = source.get("cursor_format")
    if source.get("kind") == "sql" and isinstance(fmt, str):
        if not source.get("cursor"):
            add(("source", "cursor_format"), "cursor_format describes the cursor column's text: it needs source.cursor")
        elif not SORTABLE_CURSOR.fullmatch(fmt):
            add(("source", "cursor_format"), f"{fmt!r} does not sort as text in time order: start with %Y and use "
                                             "only the zero-padded %m %d %H %M %S %f %3f between fixed characters")
    if source.get("kind") == "sql" and isinstance(source.get("url"), str) and source["url"]:
        if "://" not in source["url"]:
            add(("source", "url"), "not a database URL (expected e.g. mysql+pymysql://user@host/db)")

    if source.get("kind") == "http":
        for path, msg in http_path_problems(source):
            add(("source",) + path, msg)
        if source.get("rows") and source.get("records_by_key"):
            add(("source", "rows"), "rows (arrays of cells) and records_by_key (an object keyed by id) "
                                    "describe two different layouts: use one")
        tokens = (source.get("pagination") or {}).get("next") if isinstance(source.get("pagination"), dict) else None
        for param, expr in (tokens.items() if isinstance(tokens, dict) else []):
            if isinstance(expr, str) and (msg := _jmespath_problem(expr)):
                add(("source", "pagination", "next", param), msg)
        _keyed_problems(source, fields, direct, add)
        cursor = source.get("cursor")
        cfield = fields.get(direct.get(cursor)) if isinstance(cursor, str) else None
        ctype = cfield.get("type") if isinstance(cfield, dict) else None
        for path, msg in http_template_problems(source, ctype if isinstance(ctype, str) else None):
            add(("source",) + path, msg)
        used = request_variables(source.get("request"))
        dates = sorted({"start_date", "end_date"} & used) if isinstance(used, set) else []
        if dates and ctype in ("datetime", "date"):
            add(("source", "request"), f"{' and '.join(dates)} stay null with a {ctype} cursor (--start-date and "
                                       f"--end-date are since and until then); use since/until", "warning")
        _page_concurrency_problems(source, add)


def _page_concurrency_problems(source: dict, add: Add) -> None:
    """A sorted source's pages are fresh queries from the last value read (from_cursor): none can be
    fetched ahead. (The paging styles that cannot say their next call early refuse the key in the
    schema.)"""
    paging = source.get("pagination")
    if isinstance(paging, dict) and isinstance(paging.get("concurrency"), int) and paging["concurrency"] > 1 \
            and source.get("sorted_by_cursor") is True and source.get("next_page") != "pagination":
        add(("source", "pagination", "concurrency"), "a sorted source starts every next page as a fresh query "
            "from the last cursor value read (next_page: from_cursor), so no page can be fetched ahead: set "
            "next_page: pagination (follow the API's pages) or drop concurrency")


# a text timestamp layout that sorts in time order: %Y first, then zero-padded parts in order
SORTABLE_CURSOR = re.compile(r"%Y[^%]*%m[^%]*%d(?:[^%]*%H(?:[^%]*%M(?:[^%]*%S(?:[^%]*(?:%f|%3f))?)?)?)?[^%]*")

def _keyed_problems(source: dict, fields: dict, direct: dict[str, str], add: Add) -> None:
    """records_by_key copies each object key into key_field: a spec that never reads it drops the key
    (often the only link to the parent record)."""
    keyed = source.get("records_by_key")
    name = keyed.get("key_field") if isinstance(keyed, dict) else None
    if not isinstance(name, str) or not fields or name in direct:
        return
    if any(isinstance(f, dict) and name in str(f.get("expr", "")) for f in fields.values()):
        return
    add(("source", "records_by_key", "key_field"), f"each key is copied into '{name}' but no field reads it "
                                                   f"(add a field with from: {name})", "warning")


HTTP_PATHS = (("records",), ("total",), ("pagination", "next"), ("pagination", "total"),
              ("pagination", "total_pages"), ("pagination", "more"), ("pagination", "next_start"))


def http_path_problems(source: dict) -> list[tuple[tuple, str]]:
    """The jmespath expressions an HTTP source reads its responses with compile (or the run would
    fail on its first page)."""
    import jmespath

    problems = []
    for path in HTTP_PATHS:
        if path == ("records",) and source.get("format") == "xml":
            continue  # an ElementPath: xml_problems
        node: Any = source
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str):
            try:
                jmespath.compile(node)
            except jmespath.exceptions.JMESPathError as e:
                problems.append((path, f"not a valid jmespath expression: {e}"))
    return problems


def _delete_problems(deletes: dict, source: dict, target: dict, direct: dict[str, str], add: Add) -> None:
    """mark_and_sweep lists ids with the HTTP request and stages them as the target key."""
    ids = deletes.get("ids")
    if deletes.get("mode") != "mark_and_sweep":
        if ids is not None:
            add(("deletes", "ids"), "ids is used by mode: mark_and_sweep only")
        return
    if source.get("kind") != "http":
        add(("deletes", "mode"), "mark_and_sweep lists the ids with the source's request: HTTP sources only "
                                 "(use mode: sweep)")
    skey = source.get("key")
    skeys = [skey] if isinstance(skey, str) else skey if isinstance(skey, list) else []
    tkey = target.get("key")
    from_source = {direct.get(k) for k in skeys if isinstance(k, str)}
    for k in ([tkey] if isinstance(tkey, str) else tkey if isinstance(tkey, list) else []):
        if isinstance(k, str) and k not in from_source:
            add(("target", "key"), f"mark_and_sweep stages listed ids as the target key: '{k}' must be a "
                                   f"field copied straight from a source.key path")
    if not isinstance(ids, dict):
        return
    paths = ids.get("key")
    paths = [paths] if isinstance(paths, str) else paths if isinstance(paths, list) else []
    if paths and len(paths) != len(skeys):
        add(("deletes", "ids", "key"), f"{len(paths)} key path(s) for a source.key of {len(skeys)}")
    for where, expr in [(("deletes", "ids", "records"), ids.get("records"))] + \
            [(("deletes", "ids", "key"), p) for p in paths]:
        if isinstance(expr, str) and (msg := _jmespath_problem(expr)):
            add(where, msg)
    if isinstance(ids.get("request"), dict):
        for part in ("path", "params", "headers", "json"):
            for path, text in _template_strings(ids["request"].get(part), ("deletes", "ids", "request", part)):
                for msg in template_problems(text):
                    add(path, msg)


def _jmespath_problem(expr: str) -> str | None:
    import jmespath
    try:
        jmespath.compile(expr)
    except jmespath.exceptions.JMESPathError as e:
        return f"not a valid jmespath expression: {e}"
    return None


SAMPLE_CURSOR = {"datetime": dt.datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc),
                 "date": dt.date(2025, 1, 2), "integer": 12345, "decimal": Decimal("12.5"), "string": "x"}


def request_variables(value: Any) -> set[str] | str:
    """The template variables a request mapping uses, or why one of its templates does not compile."""
    import jinja2
    from jinja2 import meta

    from syncrunner.core.templating import ENV

    found: set[str] = set()
    for text in strings_in(value):
        try:
            found |= meta.find_undeclared_variables(ENV.parse(text))
        except jinja2.TemplateSyntaxError as e:
            return f"template does not compile (template line {e.lineno}): {e.message}"
    return found


def tie_break_problems(source: dict, cursor_type: str | None) -> list[tuple[tuple, str]]:
    """A tie_break is only sent when a query reaches its cap, maybe hours into a run: check now that
    both requests use the variables that make progress and render for a sample tie."""

    request, tie = source.get("request"), source["tie_break"]
    used = {"request": request_variables(request), "tie_break": request_variables(tie)}
    problems = [((k,), v) for k, v in used.items() if isinstance(v, str)]
    if problems:
        return problems
    if "since_exclusive" not in used["request"]:
        problems.append((("request",), "with tie_break, the request must use since_exclusive (ask for cursor > "
                                       "since, e.g. GT instead of GTE): after listing a tied value it goes on "
                                       "past it, or it would read that value again forever"))
    for name in ("tie_value", "after_key"):
        if name not in used["tie_break"]:
            problems.append((("tie_break",), f"the tie_break request must use {name} (narrow the query to "
                                             f"cursor == tie_value and key > after_key, sorted by key)"))
    sample = SAMPLE_CURSOR.get(cursor_type or "", SAMPLE_CURSOR["string"])
    tries = [("request", context(sample, None, since_exclusive=True), request)] + [
        ("tie_break", context(None, None, tie_value=sample, after_key=k), tie) for k in (None, "1")]
    for where, ctx, part in tries:
        if not isinstance(part, dict):
            continue
        try:
            rendered = RequestTemplate(part, "lint", where).render(ctx)
        except Exception as e:  # noqa: BLE001 - any render error is a spec problem
            problems.append(((where,), f"does not render for a sample tie ({type(e).__name__}: {e})"))
            break
        if where == "tie_break" and rendered.body is not None and not isinstance(rendered.body, dict):
            problems.append(((where, "json"), "must render to a JSON object (its keys replace the request's)"))
            break
    return problems


def http_template_problems(source: dict, cursor_type: str | None) -> list[tuple[tuple, str]]:
    """The request and tie_break templates, checked without rendering; only when every one passes
    is a tie_break rendered for a sample tie (tie_break_problems)."""
    problems = []
    blocks = [((block,), source[block]) for block in ("request", "tie_break") if isinstance(source.get(block), dict)]
    levels = source.get("for_each") if isinstance(source.get("for_each"), list) else []
    blocks += [(("for_each", i, "request"), lv["request"]) for i, lv in enumerate(levels)
               if isinstance(lv, dict) and isinstance(lv.get("request"), dict)]
    for where, block in blocks:
        for part in ("path", "params", "headers", "json", "xml"):
            for path, text in _template_strings(block.get(part), where + (part,)):
                problems += [(path, msg) for msg in template_problems(text)]
    problems += for_each_problems(source)
    if not problems and isinstance(source.get("tie_break"), dict):
        problems = tie_break_problems(source, cursor_type)
    problems += xml_problems(source)
    if not problems and source.get("sorted_by_cursor") is True and source.get("next_page") != "pagination":
        used = request_variables(source.get("request"))
        if isinstance(used, set) and "since" not in used:
            problems.append((("request",), "a sorted source starts each next page from the last cursor value "
                                           "read: the request must use since (cursor >= since), or set "
                                           "next_page: pagination"))
    return problems


def xml_problems(source: dict) -> list[tuple[tuple, str]]:
    """An XML source's paths must be ElementPath with declared prefixes; body-reading paging is JSON only."""
    if source.get("format") != "xml":
        return []
    from xml.etree.ElementPath import xpath_tokenizer

    xml = source.get("xml") if isinstance(source.get("xml"), dict) else {}
    spaces = xml.get("namespaces") or {}
    problems = []
    paths = [(("records",), source.get("records"))] + [(("xml", k), xml.get(k)) for k in ("names", "values")]
    paths += [(("xml", "fields", k), v) for k, v in (xml.get("fields") or {}).items()]
    for where, path in paths:
        if not isinstance(path, str):
            continue
        try:
            list(xpath_tokenizer(path, spaces))
        except SyntaxError as e:
            problems.append((where, f"{e} (declare the prefix under xml.namespaces)"))
    paging = source.get("pagination") if isinstance(source.get("pagination"), dict) else {}
    if paging.get("type") in ("cursor", "next_url") or paging.get("total") or paging.get("total_pages"):
        problems.append((("pagination",), "an XML response cannot be read by a jmespath: use none, page, "
                                          "offset (without total) or link_header"))
    return problems


def for_each_problems(source: dict) -> list[tuple[tuple, str]]:
    """Each parent level lists parents one way; `parent` is only defined under a for_each; the
    per-parent listing has no order across parents, so no sorted paging or tie listing."""
    levels = source.get("for_each")
    problems: list[tuple[tuple, str]] = []
    if source.get("skip_parent_on") and not isinstance(levels, list):
        problems.append((("skip_parent_on",), "skip_parent_on needs for_each (there is no parent to skip)"))
    if not isinstance(levels, list):
        used = request_variables([source.get("request"), source.get("tie_break")])
        if isinstance(used, set) and "parent" in used:
            problems.append((("request",), "templates use parent, which only for_each defines"))
        return problems
    for key in ("sorted_by_cursor", "tie_break"):
        if source.get(key) not in (None, False):
            problems.append(((key,), f"{key} cannot be combined with for_each (each parent's listing is "
                                     f"ordered on its own; no order runs across parents)"))
    for i, lv in enumerate(levels):
        if not isinstance(lv, dict):
            continue
        if ("items" in lv) == ("request" in lv):
            problems.append((("for_each", i), "a parent level has either items (a literal list) or a request"))
        elif "request" in lv and "records" not in lv:
            problems.append((("for_each", i), "records is missing (jmespath to the parents in a response; "
                                              "'@' for a bare list)"))
        elif "items" in lv and ({"records", "pagination"} & set(lv)):
            problems.append((("for_each", i), "records and pagination go with a request, not with items"))
        if i == 0 and "request" in lv:
            used = request_variables(lv["request"])
            if isinstance(used, set) and "parent" in used:
                problems.append((("for_each", 0, "request"), "the first level has no parent to see"))
    return problems


def _template_strings(value: Any, path: tuple):
    """(path, text) of every string in a request part that the HTTP source compiles as a template."""
    if isinstance(value, str):
        if "{" in value:
            yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _template_strings(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _template_strings(v, path + (i,))
