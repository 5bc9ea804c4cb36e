"""${VAR} and ${VAR:-default} interpolation of spec values; values of secret-looking variables are
registered for redaction as they are read."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from syncrunner.core.redact import is_secret_name, is_url_name, register_secret, register_url_password

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class MissingVar:
    name: str
    path: tuple


def interpolate(data: Any, env: Mapping[str, str], path: tuple = ()) -> tuple[Any, list[MissingVar]]:
    """Return data with every ${VAR} replaced, and the variables that were missing.

    A scalar that is exactly one reference is re-typed as YAML would type it, so
    `enabled: ${ENABLE_X:-true}` is a boolean and `chunk_size: ${N:-1000}` an integer."""
    missing: list[MissingVar] = []

    def walk(value: Any, p: tuple) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, p + (k,)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, p + (i,)) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            return _substitute(value, env, p, missing)
        return value

    return walk(data, path), missing


def _substitute(text: str, env: Mapping[str, str], path: tuple, missing: list[MissingVar]) -> Any:
    def repl(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in env and env[name] != "":
            value = env[name]
            if is_secret_name(name) or path[:2] == ("source", "auth"):  # a credential, whatever its name
                register_secret(value)
            elif is_url_name(name):
                register_url_password(value)
            return value
        if default is not None:
            return default
        missing.append(MissingVar(name, path))
        return ""

    whole = _REF.fullmatch(text.strip()) is not None
    result = _REF.sub(repl, text)
    if whole:
        try:
            typed = yaml.safe_load(result) if result.strip() else None
        except yaml.YAMLError:
            return result
        if typed is None or isinstance(typed, (bool, int, float)):
            return typed if result.strip() else result
    return result
