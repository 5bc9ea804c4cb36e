"""`syncrunner lint`: every spec under the given paths, checked as a run would load it."""
from __future__ import annotations

from typing import Any

from syncrunner.spec.load import check_spec, find_specs
from syncrunner.spec.model import Problem


def lint_paths(paths: list[str], env: Any = None) -> tuple[int, list]:
    """Lint every spec under paths; returns (number of specs, problems)."""

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
