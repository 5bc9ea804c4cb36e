"""`syncrunner lint`: every spec under the given paths, checked as a run would load it, and every
schedules file (schedules.yaml, *.schedules.yaml) as Celery beat would load it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from syncrunner.spec.load import check_spec, find_specs
from syncrunner.spec.model import Problem
from syncrunner.spec.schedules import check_schedules, find_schedules
from syncrunner.spec.schemaref import schema_comment_problems


def lint_paths(paths: list[str], env: Any = None) -> tuple[int, list]:
    """Lint every spec and schedules file under paths; returns (number of files, problems)."""
    schedules = find_schedules(paths)

    files = [f for f in find_specs(paths) if f not in schedules]
    problems: list[Problem] = []
    for f in schedules:
        problems.extend(check_schedules(f)[1])
    seen: dict[tuple, str] = {}
    for f in files:
        spec, probs = check_spec(f, env, strict_env=False)
        problems.extend(probs)
        try:
            problems.extend(schema_comment_problems(f, Path(f).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            pass  # check_spec has reported the unreadable file
        if spec is not None:
            ident = (spec.crm, spec.entity)
            if ident in seen:
                problems.append(Problem(str(f), 1, "entity", f"{spec.crm}.{spec.entity} is also defined in {seen[ident]}"))
            seen[ident] = str(f)
    return len(files) + len(schedules), problems
