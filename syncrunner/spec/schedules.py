"""`schedules.yaml`: when Celery beat queues which specs (docs/scale-out.md). Checked like a spec:
YAML with line numbers -> JSON Schema (schemas/schedules.schema.json) -> the checks a schema cannot
express (cron expressions, paths, the time zone, unique names), every problem as file:line: key: message."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from syncrunner.core.cron import cron_problem
from syncrunner.spec.load import is_schedules_file, parse_duration
from syncrunner.spec.model import Problem, SpecError


def find_schedules(paths: list[str]) -> list[Path]:
    """The schedules files among paths: named ones, and those in the folders given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(x for x in p.rglob("*.y*ml") if is_schedules_file(x)))
        elif is_schedules_file(p):
            out.append(p)
    return out


@dataclass
class Schedule:
    name: str
    run: str                 # absolute path of the spec file or folder
    cron: str
    flags: dict[str, Any] = field(default_factory=dict)
    expires_seconds: float = 86400.0

    def crontab_fields(self) -> dict[str, str]:
        """The cron fields by celery.schedules.crontab's keyword names."""
        keys = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
        return dict(zip(keys, self.cron.split()))


@dataclass
class Schedules:
    path: str
    timezone: str
    entries: list[Schedule]


@lru_cache(maxsize=1)
def _validator():
    import jsonschema
    from importlib.resources import files

    schema = json.loads((files("syncrunner") / "schemas" / "schedules.schema.json").read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def check_schedules(path: str | Path) -> tuple[Schedules | None, list[Problem]]:
    """Load and check a schedules file; (Schedules or None, problems)."""
    import yaml

    from syncrunner.spec.yamlpos import load_located

    fname = str(path)
    try:
        loc = load_located(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        return None, [Problem(fname, 1, "(file)", f"cannot read: {e.strerror or e}")]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        return None, [Problem(fname, mark.line + 1 if mark else 1, "(yaml)", f"invalid YAML: {e}")]
    problems = [_schema_problem(err, loc, fname) for err in _validator().iter_errors(loc.data)]
    if not problems:
        problems = _semantic_problems(loc, fname)
    problems.sort(key=lambda p: (p.line, p.key))
    if problems:
        return None, problems
    return _build(loc.data, Path(path)), []


def load_schedules(path: str | Path) -> Schedules:
    schedules, problems = check_schedules(path)
    if schedules is None:
        raise SpecError(problems)
    return schedules


def _schema_problem(err, loc, fname: str) -> Problem:
    path = tuple(err.absolute_path)
    message = err.message
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        path, message = path + (extra[0],), f"unknown key '{extra[0]}'"
    return Problem(fname, loc.line_of(path), ".".join(map(str, path)) or "(document)", message)


def _semantic_problems(loc, fname: str) -> list[Problem]:
    problems: list[Problem] = []

    def add(path: tuple, message: str) -> None:
        problems.append(Problem(fname, loc.line_of(path), ".".join(map(str, path)), message))

    try:
        ZoneInfo(loc.data.get("timezone", "UTC"))
    except (ZoneInfoNotFoundError, ValueError):
        add(("timezone",), f"unknown time zone {loc.data['timezone']!r}")
    seen: set[str] = set()
    for i, entry in enumerate(loc.data["schedules"]):
        problem = cron_problem(entry["cron"])
        if problem:
            add(("schedules", i, "cron"), problem)
        if entry["name"] in seen:
            add(("schedules", i, "name"), f"schedule {entry['name']!r} is named twice")
        seen.add(entry["name"])
        if not (Path(fname).parent / entry["run"]).exists():
            add(("schedules", i, "run"), f"{entry['run']!r} does not exist (relative to {fname})")
        if "expires" in entry and parse_duration(entry["expires"]).total_seconds() <= 0:
            add(("schedules", i, "expires"), "must be more than 0")
    return problems


def _build(data: dict, path: Path) -> Schedules:
    base = path.resolve().parent
    return Schedules(str(path), data.get("timezone", "UTC"), [
        Schedule(e["name"], str((base / e["run"]).resolve()), e["cron"], dict(e.get("flags", {})),
                 parse_duration(e.get("expires", "24h")).total_seconds())
        for e in data["schedules"]])
