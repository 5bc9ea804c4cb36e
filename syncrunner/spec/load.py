"""Load a spec: YAML -> ${ENV} interpolation -> JSON Schema -> semantic checks -> Spec dataclasses.

Every problem is reported as `file:line: key: message`, all of them at once."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import replace
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from syncrunner.core.redact import register_url_password

if TYPE_CHECKING:  # imported where used: a mapping worker unpickles specs and never loads one
    import jsonschema

    from syncrunner.spec.yamlpos import Located

from syncrunner.spec.model import strings_in, DeleteSpec, FieldSpec, Problem, Rule, SourceSpec, Spec, SpecError, TargetSpec


def _schema_file():
    """The spec schema as package data: `pip install .` ships it (a checkout's schemas/ folder is
    a link to the same file, which the specs' `$schema` lines and the docs name)."""
    from importlib.resources import files

    return files("syncrunner") / "schemas" / "spec.schema.json"


def schema_path() -> Path:
    return Path(str(_schema_file())).resolve()


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    import jsonschema

    schema = json.loads(_schema_file().read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def _key_str(path: tuple) -> str:
    return ".".join(str(p) for p in path) or "(document)"


def parse_duration(text: str) -> timedelta:
    if text in ("0", 0):
        return timedelta(0)
    m = re.fullmatch(r"(\d+)([smhd])", str(text))
    if not m:
        raise ValueError(f"bad duration {text!r}")
    n, unit = int(m.group(1)), m.group(2)
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    return timedelta(**{units[unit]: n})


def check_spec(path: str | Path, env: Mapping[str, str] | None = None, *,
               strict_env: bool = True) -> tuple[Spec | None, list[Problem]]:
    """Load and check one spec. Returns (Spec or None, problems). strict_env=False (lint) reports a
    missing environment variable as a warning and goes on with an empty value."""
    import yaml

    from syncrunner.spec.envvars import interpolate
    from syncrunner.spec.lint import semantic_problems  # lint imports spec; import late to keep the cycle harmless
    from syncrunner.spec.yamlpos import load_located

    env = os.environ if env is None else env
    fname = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        return None, [Problem(fname, 1, "(file)", f"cannot read: {e.strerror or e}")]
    try:
        loc = load_located(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        return None, [Problem(fname, line, "(yaml)", f"invalid YAML: {getattr(e, 'problem', None) or e}")]
    if not isinstance(loc.data, dict):
        return None, [Problem(fname, 1, "(document)", "a spec must be a YAML mapping")]

    data, missing = interpolate(loc.data, env)
    problems: list[Problem] = []
    for mv in missing:
        problems.append(Problem(
            fname, loc.line_of(mv.path), _key_str(mv.path),
            f"environment variable {mv.name} is not set (needed by spec {fname})",
            "error" if strict_env else "warning", "env"))

    problems += _schema_problems(data, loc, fname)
    problems += semantic_problems(data, loc, fname)
    problems.sort(key=lambda p: (p.line, p.key))
    if any(p.severity == "error" for p in problems):
        return None, problems
    for value in strings_in(data.get("source", {})):
        register_url_password(value)
    return _build(data, fname, text), problems


def load_spec(path: str | Path, env: Mapping[str, str] | None = None) -> Spec:
    """Load a spec for running; any error raises SpecError naming file, line and key."""
    spec, problems = check_spec(path, env, strict_env=True)
    if spec is None:
        raise SpecError([p for p in problems if p.severity == "error"])
    return spec


def _schema_problems(data: dict, loc: Located, fname: str) -> list[Problem]:
    problems = []
    for err in _validator().iter_errors(data):
        problems.extend(_explain(err, loc, fname))
    # one place may fail several ways (oneOf branches); keep the first message per place
    seen, unique = set(), []
    for p in problems:
        if (p.line, p.key) not in seen:
            seen.add((p.line, p.key))
            unique.append(p)
    return unique


def _explain(err: jsonschema.ValidationError, loc: Located, fname: str) -> list[Problem]:
    path = tuple(err.absolute_path)
    if err.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(err.instance, dict):
        allowed = _declared_keys(err.schema if isinstance(err.schema, dict) else {})
        extras = re.findall(r"'([^']+)'", err.message.split("(")[-1] if "(" in err.message else err.message)
        extras = [e for e in extras if e in err.instance and e not in allowed] or extras
        out = []
        for extra in extras:
            p = path + (extra,)
            hint = _did_you_mean(extra, allowed)
            out.append(Problem(fname, loc.line_of(p), _key_str(p), f"unknown key '{extra}'{hint}"))
        return out
    if err.validator in ("oneOf", "anyOf", "allOf") and err.context:
        from jsonschema.exceptions import best_match

        branch = _chosen_branch(err)  # `type: cursor` picks its branch: say what that one misses
        pool = [e for e in err.context if e.relative_schema_path and e.relative_schema_path[0] == branch]
        best = best_match(pool or err.context)
        if pool and best.validator == "required":
            return [Problem(fname, loc.line_of(path), _key_str(path),
                            f"{_missing(best)} is missing (type: {err.instance['type']} needs it)")]
        if pool and best.validator == "additionalProperties":
            return [_other_types(p, err) for p in _explain(best, loc, fname)]
        return _explain(best, loc, fname)
    if err.instance is None and err.validator in ("type", "enum") and isinstance(err.schema, dict) \
            and "null" in (err.schema.get("enum") or ()):
        return [Problem(fname, loc.line_of(path), _key_str(path),
                        f'unquoted null is YAML for "no value": write {path[-1]}: "null" (quoted)')]
    if err.validator == "required":
        return [Problem(fname, loc.line_of(path), _key_str(path), f"{_missing(err)} is missing")]
    if err.validator == "enum":
        msg = f"{err.instance!r} is not one of {', '.join(map(str, err.validator_value))}"
    elif err.validator == "type":
        msg = f"expected {err.validator_value}, got {type(err.instance).__name__} {err.instance!r}"
    else:
        msg = err.message
    return [Problem(fname, loc.line_of(path), _key_str(path), msg)]


def _missing(err: jsonschema.ValidationError) -> str:
    """The key a `required` error names ("'next' is a required property" -> 'next')."""
    return err.message.split(" is a required property")[0]


def _other_types(problem: Problem, err: jsonschema.ValidationError) -> Problem:
    """An unknown key of one `type:` that other types take says so ("concurrency" of a cursor
    pagination: only page and offset take it)."""
    name = problem.key.rsplit(".", 1)[-1]
    takers = [str(sub["properties"].get("type", {}).get("const")) for sub in err.validator_value
              if isinstance(sub, dict) and name in sub.get("properties", {})]
    if not takers:
        return problem
    return replace(problem, message=f"{problem.message}: type {err.instance['type']} does not take it, "
                                    f"only type {' and '.join(takers)}")


def _chosen_branch(err: jsonschema.ValidationError) -> int | None:
    """The oneOf/anyOf branch whose `type` (const or enum) is the instance's `type`, if one is."""
    if not isinstance(err.instance, dict) or not isinstance(err.validator_value, list):
        return None
    for i, sub in enumerate(err.validator_value):
        t = sub.get("properties", {}).get("type", {}) if isinstance(sub, dict) else {}
        if "type" in err.instance and (t.get("const") == err.instance["type"]
                                       or err.instance["type"] in (t.get("enum") or ())):
            return i
    return None


def _declared_keys(schema: dict) -> set[str]:
    """Property names a (sub)schema declares, following local $refs."""
    keys = set(schema.get("properties", {}))
    ref = schema.get("$ref", "")
    if ref.startswith("#/$defs/"):
        keys |= _declared_keys(_validator().schema["$defs"].get(ref.split("/")[-1], {}))
    return keys


def _did_you_mean(word: str, options: set[str]) -> str:
    import difflib
    close = difflib.get_close_matches(word, sorted(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _decimal_mark(number_format: Any) -> str | None:
    """`number_format: formatted` reads `1,234.50`; `{decimal_mark: ","}` reads `1.234,50`."""
    if number_format is None:
        return None
    if isinstance(number_format, dict):
        return str(number_format.get("decimal_mark", "."))
    return "."


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _build(data: dict, fname: str, text: str) -> Spec:
    from syncrunner.spec.params import defaults, from_data

    params = from_data(data.get("params"))
    src = data["source"]
    tgt = data["target"]
    fields = {}
    for name, f in data["fields"].items():
        fields[name] = FieldSpec(
            name=name, type=f["type"], source_path=f.get("from"), expr=f.get("expr"),
            required=bool(f.get("required", False)), default=f.get("default"),
            validators=tuple(f.get("validators", ())),
            choices=tuple(f["choices"]) if "choices" in f else None, regex=f.get("regex"),
            min=f.get("min"), max=f.get("max"), max_length=f.get("max_length"),
            precision=f.get("precision", 18), scale=f.get("scale", 4),
            on_invalid=f.get("on_invalid", "reject"), number_format=_decimal_mark(f.get("number_format")),
            date_format=f.get("date_format"))
    deletes = data.get("deletes", "none")
    dspec = DeleteSpec() if deletes == "none" else DeleteSpec(
        mode=deletes["mode"], action=deletes.get("action", "soft"),
        max_delete_fraction=float(deletes.get("max_delete_fraction", 0.2)), ids=deletes.get("ids"))
    return Spec(
        path=fname, crm=data["crm"], entity=data["entity"], enabled=bool(data.get("enabled", True)),
        after=list(data.get("after", [])), lookback=parse_duration(data.get("lookback", "5m")),
        source=SourceSpec(
            kind=src["kind"], key=_as_list(src["key"]), cursor=src.get("cursor"),
            timezone=src.get("timezone", "UTC"), chunk_size=int(src.get("chunk_size", 1000)),
            null_cursor=src.get("null_cursor", "include"), options=src,
            serves_stale_copies=bool(src.get("serves_stale_copies", src["kind"] == "http"))),
        target=TargetSpec(table=tgt["table"], key=_as_list(tgt["key"]), batch_size=int(tgt.get("batch_size", 500)),
                            fingerprint=bool(tgt.get("fingerprint", True))),
        fields=fields,
        rules=[Rule(r["rule"], r["message"]) for r in data.get("validate", [])],
        deletes=dspec,
        digest=hashlib.sha256(text.encode()).hexdigest()[:16],
        description=data.get("description", ""),
        params=params, param_values=defaults(params),
    )


def find_specs(paths: list[str]) -> list[Path]:
    """Expand files and folders (recursively) into spec files, sorted, each once. A folder's
    schedules files (spec/schedules.py) are not specs."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(x for x in p.rglob("*.y*ml") if x.suffix in (".yaml", ".yml")
                              and not is_schedules_file(x)))
        else:
            out.append(p)
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def is_schedules_file(path: Path) -> bool:
    """schedules.yaml (or x.schedules.yaml): Celery beat's schedule (spec/schedules.py), not a spec."""
    return path.name in ("schedules.yaml", "schedules.yml") or path.name.endswith((".schedules.yaml", ".schedules.yml"))
