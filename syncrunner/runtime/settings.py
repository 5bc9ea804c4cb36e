"""The operator's settings: every SYNCRUNNER_* environment variable syncrunner reads, parsed here
and nowhere else (docs/operations.md lists them)."""
from __future__ import annotations

import os
from typing import Callable, TypeVar

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


def map_workers_from_env(*, remote_source: bool = False) -> int:
    """SYNCRUNNER_MAP_WORKERS: mapping worker processes for large runs; a count, 0/off for none,
    empty/auto for the default (one per core, at most 2; none on a single core, and none for a
    remote source such as an HTTP API, whose paging bounds the run: runtime/parallel.py)."""
    value = os.environ.get("SYNCRUNNER_MAP_WORKERS", "").strip().lower()
    if value in ("", "auto"):
        if remote_source:
            return 0
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return min(2, cores) if cores > 1 else 0
    if value in ("off", "false", "no"):
        return 0
    return env_number("SYNCRUNNER_MAP_WORKERS", 0, int, 0)


# -- Celery (syncrunner[celery], docs/scale-out.md) ------------------------------------------------
def broker_url_from_env() -> str:
    """SYNCRUNNER_BROKER_URL: the Celery broker (Redis), for `enqueue`, workers and beat."""
    return os.environ.get("SYNCRUNNER_BROKER_URL") or "redis://127.0.0.1:6379/0"


def result_backend_from_env() -> str | None:
    """SYNCRUNNER_RESULT_BACKEND: where Celery keeps the tasks' run summaries (unset: not kept)."""
    return os.environ.get("SYNCRUNNER_RESULT_BACKEND") or None


def queue_from_env() -> str:
    """SYNCRUNNER_QUEUE: the Celery queue syncs are sent to and workers read."""
    return os.environ.get("SYNCRUNNER_QUEUE") or "syncrunner"


def visibility_timeout_from_env() -> float:
    """SYNCRUNNER_VISIBILITY_TIMEOUT: seconds before Redis gives a task whose worker vanished
    (taken, never acknowledged) to another worker. Longer than the longest run: a live run's task
    handed out again only finds its entity locked (see docs/scale-out.md)."""
    return env_number("SYNCRUNNER_VISIBILITY_TIMEOUT", 43200.0, float, 1.0)


def schedules_file_from_env() -> str | None:
    """SYNCRUNNER_SCHEDULES: the schedules.yaml Celery beat loads."""
    return os.environ.get("SYNCRUNNER_SCHEDULES") or None
