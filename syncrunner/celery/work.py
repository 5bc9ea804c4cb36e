"""What a worker does with one `syncrunner.run` task: run its specs (one spec, or a folder's in
`after:` order) against the worker's own target, as `syncrunner run` would, and settle the
`queued` SyncHistory rows `syncrunner enqueue` wrote for them.

A run that starts replaces its queued row (history.start_run). One that never starts settles it:
a spec gated off by `enabled:` (evaluated here, in the worker's environment) -> `skipped`; the
entity already running -> `skipped` with the reason; refused before its start (a broken spec, a
source query that lacks a field) -> `failed`. Data errors end in SyncHistory; only an unreachable
target is raised (TargetUnreachable), for Celery to retry."""
from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from syncrunner.core.errtext import one_line
from syncrunner.core.redact import redact, redact_url
from syncrunner.ops.progress import ProgressObserver
from syncrunner.ops.summary import result_json
from syncrunner.runtime import history
from syncrunner.runtime.engine import SyncRun
from syncrunner.runtime.ordering import run_order
from syncrunner.runtime.runstate import RunResult
from syncrunner.runtime.settings import default_target_url
from syncrunner.runtime.strategy import RunOptions
from syncrunner.runtime.target import make_engine
from syncrunner.spec.load import load_spec
from syncrunner.spec.model import SpecError

log = logging.getLogger("syncrunner.celery")


class TargetUnreachable(RuntimeError):
    """The target database did not answer: a transient system error, retried by Celery."""


class WrongTarget(RuntimeError):
    """The worker's SYNCRUNNER_TARGET_URL is not the target the task was queued for."""


def target_for(queued_target: str) -> str:
    """The worker's own target URL (credentials stay in the worker's environment, never in a
    message); it must be the one the task was queued against."""
    url = default_target_url()
    if redact_url(url) != queued_target:
        raise WrongTarget(f"task queued for target {queued_target} but this worker's SYNCRUNNER_TARGET_URL "
                          f"is {redact_url(url)}")
    return url


def check_target(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as e:
        raise TargetUnreachable(redact(f"target unreachable ({redact_url(url)}): {one_line(e)}")) from None
    finally:
        engine.dispose()


def run_specs(paths: list[str], flags: dict[str, Any], queued_target: str,
              queued: dict[str, int]) -> dict[str, Any]:
    """Run the task's specs; returns the run summary (`syncrunner run --json`'s entities)."""
    url = target_for(queued_target)
    check_target(url)
    opts = RunOptions(**flags)
    specs = []
    for path in paths:
        try:
            specs.append(load_spec(path))
        except SpecError as e:  # the spec as this worker sees it is broken: not worth a retry
            _settle(url, queued.get(path), "failed", redact(str(e).replace("\n", "; ")))
            log.error("%s", e)
    results: list[RunResult] = []
    for spec in run_order(specs):
        result = SyncRun(spec, opts, url, queued_id=queued.get(spec.path), handle_signals=False,
                         observers=[ProgressObserver(tty=False)]).run()
        results.append(result)
        _settle_result(url, queued.get(spec.path), result)
        if result.status == "failed":
            check_target(url)  # failed because the target went away: retry (and resume)
    return summary(results, len(paths) - len(specs))


def _settle_result(url: str, queued_id: int | None, result: RunResult) -> None:
    if result.status == "skipped":
        _settle(url, queued_id, "skipped", "disabled by its spec's enabled flag")
    elif result.status == "locked":
        _settle(url, queued_id, "skipped", f"not started: {result.error}")
    elif result.status == "failed" and result.run_id is None:
        _settle(url, queued_id, "failed", f"not started: {result.error}")


def _settle(url: str, queued_id: int | None, status: str, error: str) -> None:
    """End a queued row whose run never started (a no-op if a run replaced it)."""
    if queued_id is None:
        return
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            history.settle_queued(conn, queued_id, status, error)
    finally:
        engine.dispose()


def summary(results: list[RunResult], broken_specs: int = 0) -> dict[str, Any]:
    failed = broken_specs or any(r.status == "failed" for r in results)
    partial = any(r.status == "partial" for r in results)
    return {"exit_code": 1 if failed else 3 if partial else 0,
            "entities": [result_json(r) for r in results]}
