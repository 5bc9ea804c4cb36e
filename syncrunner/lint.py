"""Semantic checks a JSON Schema cannot express: mapped cursor and keys, compilable templates and
expressions, safe use of the window in SQL, valid time zones and regexes."""
from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .runtime.mapping import plain_path
from .runtime.templating import expression_problem, sql_template_problems
from .yamlpos import Located


def semantic_problems(data: dict, loc: Located, fname: str) -> list:
    from .spec import Problem

    problems: list[Problem] = []

    def add(path: tuple, msg: str, severity: str = "error") -> None:
        problems.append(Problem(fname, loc.line_of(path), ".".join(map(str, path)), msg, severity))

    fields = data.get("fields") if isinstance(data.get("fields"), dict) else {}
    source = data.get("source") if isinstance(data.get("source"), dict) else {}
    target = data.get("target") if isinstance(data.get("target"), dict) else {}
    direct = {}  # source path -> target field, for fields copied straight from a source path
    for name, f in fields.items():
        if not isinstance(f, dict):
            continue
        if "expr" in f:
            if isinstance(f["expr"], str) and (msg := expression_problem(f["expr"])):
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
                        add(("fields", name, "from"), f"not a valid jmespath expression: {e}")
        if isinstance(f.get("regex"), str):
            try:
                re.compile(f["regex"])
            except re.error as e:
                add(("fields", name, "regex"), f"regex does not compile: {e}")
        if f.get("required") and "default" in f:
            add(("fields", name, "default"), "a required field with a default can never be missing", "warning")

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
    skey = source.get("key")
    for k in ([skey] if isinstance(skey, str) else skey if isinstance(skey, list) else []):
        if isinstance(k, str) and fields and k not in direct:
            add(("source", "key"), f"source key '{k}' is not mapped by any field")
    tkey = target.get("key")
    for k in ([tkey] if isinstance(tkey, str) else tkey if isinstance(tkey, list) else []):
        if isinstance(k, str) and fields and k not in fields:
            add(("target", "key"), f"target key '{k}' is not one of the fields")
        elif isinstance(k, str) and isinstance(fields.get(k), dict) and fields[k].get("type") == "json":
            add(("target", "key"), f"target key '{k}' cannot be a json field")

    tz = source.get("timezone")
    if isinstance(tz, str):
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            add(("source", "timezone"), f"unknown time zone '{tz}' (use an IANA name such as America/New_York)")
    if source.get("kind") == "sql" and isinstance(source.get("query"), str):
        for msg in sql_template_problems(source["query"]):
            add(("source", "query"), msg)
    if source.get("kind") == "sql" and isinstance(source.get("url"), str) and source["url"]:
        if "://" not in source["url"]:
            add(("source", "url"), "not a database URL (expected e.g. mysql+pymysql://user@host/db)")

    deletes = data.get("deletes")
    if isinstance(deletes, dict) and deletes.get("action", "soft") == "soft" and "deleted_at" in fields:
        add(("fields", "deleted_at"), "soft deletes (deletes.action: soft) manage the column deleted_at "
                                      "themselves; rename this field")

    if "_sr_fingerprint" in fields:
        add(("fields", "_sr_fingerprint"), "_sr_fingerprint is syncrunner's own column (row fingerprints); "
                                           "rename this field")

    for i, rule in enumerate(data.get("validate") or []):
        if isinstance(rule, dict) and isinstance(rule.get("rule"), str):
            if msg := expression_problem(rule["rule"]):
                add(("validate", i, "rule"), msg)
    return problems


def lint_paths(paths: list[str], env: Any = None) -> tuple[int, list]:
    """Lint every spec under paths; returns (number of specs, problems)."""
    from .spec import Problem, check_spec, find_specs

    files = find_specs(paths)
    problems: list[Problem] = []
    seen: dict[tuple, str] = {}
    for f in files:
        spec, probs = check_spec(f, env, strict_env=False)
        problems.extend(probs)
        if spec is not None:
            ident = (spec.crm, spec.entity)
            if ident in seen:
                problems.append(Problem(str(f), 1, "entity", f"{spec.crm}.{spec.entity} is also defined in {seen[ident]}"))
            seen[ident] = str(f)
    return len(files), problems
