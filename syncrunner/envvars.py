"""The environment: ${VAR} and ${VAR:-default} interpolation of spec values, and the operator's
settings, the only SYNCRUNNER_* variables syncrunner reads (listed in docs/operations.md)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

import yaml

from .redact import is_secret_name, is_url_name, register_secret, register_url_password

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


N = TypeVar("N", int, float)


def env_number(name: str, default: N, cast: Callable[[str], N], minimum: N | None = None) -> N:
    """A setting (SYNCRUNNER_*) as a number, or `default` when it is unset or blank; a value
    that is not a number (or below `minimum`) is an error naming the variable."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = cast(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {value!r}") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be at least {minimum} ({number})")
    return number


# -- the operator's settings -------------------------------------------------------------------
DEFAULT_TARGET = "sqlite:///syncrunner.db"


def default_target_url() -> str:
    """SYNCRUNNER_TARGET_URL: the target when a command has no --target."""
    return os.environ.get("SYNCRUNNER_TARGET_URL") or DEFAULT_TARGET


def max_concurrent_from_env() -> int:
    """SYNCRUNNER_MAX_CONCURRENT: runs at a time across every host sharing the target (0: no limit)."""
    return env_number("SYNCRUNNER_MAX_CONCURRENT", 2, int, 0)


def slot_wait_from_env() -> float:
    """SYNCRUNNER_SLOT_WAIT: seconds a run waits for a free run slot."""
    return env_number("SYNCRUNNER_SLOT_WAIT", 3600.0, float, 0.0)


def heartbeat_seconds_from_env() -> float:
    """SYNCRUNNER_HEARTBEAT_SECONDS: how often a run stamps SyncHistory.heartbeat_at."""
    return env_number("SYNCRUNNER_HEARTBEAT_SECONDS", 30.0, float, 0.0)


def target_retry_seconds() -> float:
    """SYNCRUNNER_TARGET_RETRY_SECONDS: how long a run waits for a target that went away."""
    return env_number("SYNCRUNNER_TARGET_RETRY_SECONDS", 60.0, float, 0.0)


def map_workers_from_env() -> int:
    """SYNCRUNNER_MAP_WORKERS: mapping worker processes for large runs; a count, 0/off for none,
    empty/auto for the default (one per core, at most 2; none on a single core)."""
    value = os.environ.get("SYNCRUNNER_MAP_WORKERS", "").strip().lower()
    if value in ("", "auto"):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return min(2, cores) if cores > 1 else 0
    if value in ("off", "false", "no"):
        return 0
    return env_number("SYNCRUNNER_MAP_WORKERS", 0, int, 0)
