"""The `# yaml-language-server: $schema=...` comment of a spec: editors (VS Code's YAML extension,
any yaml-language-server client) validate and complete the spec against the schema it names. A
wrong path silently turns that off, so lint checks that it resolves.

A warning, not an error: a run never reads the comment, and the spec itself is still checked
against the schema by lint and by every run. URLs are not fetched (lint works offline)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from syncrunner.spec.model import Problem

_COMMENT = re.compile(r"^\s*#\s*yaml-language-server:\s*\$schema=(\S+)")


def schema_comment_problems(path: str | Path, text: str) -> list[Problem]:
    """A warning for each `$schema=` comment whose relative path does not name an existing file."""
    problems = []
    spec_dir = Path(path).resolve().parent
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _COMMENT.match(line)
        if not m or "://" in m.group(1):
            continue
        ref = m.group(1)
        if not (spec_dir / ref).is_file():
            problems.append(Problem(str(path), lineno, "$schema", (
                f"the yaml-language-server $schema path {ref} does not resolve from {spec_dir} (editors "
                f"then neither validate nor complete this spec); {_suggestion(spec_dir)}"), "warning"))
    return problems


def _suggestion(spec_dir: Path) -> str:
    """The relative path to the nearest schemas/spec.schema.json above the spec, else the package's."""
    for folder in (spec_dir, *spec_dir.parents):
        candidate = folder / "schemas" / "spec.schema.json"
        if candidate.is_file():
            return f"use $schema={Path(os.path.relpath(candidate, spec_dir)).as_posix()}"
    from syncrunner.spec.load import schema_path
    return f"the schema is at {schema_path()}"
