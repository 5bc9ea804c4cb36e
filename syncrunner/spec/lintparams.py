"""Lint of a spec's run parameters (`params:`): each default and choice is read as the parameter's
type would read a `--param`, so lint refuses what a run would refuse; a parameter that no request
template uses is a warning."""
from __future__ import annotations

import re
from typing import Any, Callable

from syncrunner.spec.model import strings_in
from syncrunner.spec.params import PARAM_TYPES, ParamError, ParamSpec, coerce

Add = Callable[..., None]  # add(path, message, severity="error")


def param_problems(params: Any, source: dict, add: Add) -> None:
    """Each parameter's default and choices read as its type would read a `--param`; a parameter
    no request template uses is a warning (setting it would change nothing)."""
    if not isinstance(params, dict):
        return
    for name, d in params.items():
        if not isinstance(d, dict) or d.get("type") not in PARAM_TYPES:
            continue
        item_type = "string" if d["type"] == "list" else d["type"]
        choices = d.get("choices") if isinstance(d.get("choices"), list) else None
        for i, c in enumerate(choices or []):
            try:
                coerce(ParamSpec(name, item_type), c)
            except ParamError as e:
                add(("params", name, "choices", i), f"choice {e}")
                choices = None
        if "default" in d and d["default"] is not None:
            try:
                typed = tuple(coerce(ParamSpec(name, item_type), c) for c in choices) if choices else None
                coerce(ParamSpec(name, d["type"], choices=typed), d["default"])
            except ParamError as e:
                add(("params", name, "default"), f"default {e}")
        if not _uses_param(source, name):
            add(("params", name), f"no request template uses params.{name}: setting it changes nothing "
                                  f"(only HTTP request templates see params)", "warning")


def _uses_param(source: dict, name: str) -> bool:
    """Whether a request template mentions params.NAME (or params['NAME'])."""
    parts = [source.get("request"), source.get("tie_break"), source.get("for_each")]
    return any(re.search(rf"\bparams\s*(\.\s*{name}\b|\[\s*['\"]{name}['\"])", s)
               for s in strings_in(parts))
