"""The Celery tasks. `syncrunner.run` runs specs (work.py); late acknowledgement and
reject-on-worker-lost (app.py) put the task of a worker that died back on the queue, and the next
run resumes from the dead run's checkpoint. Celery retries only an unreachable target or broker;
everything else (bad records, a bad spec, a failed source) is recorded in SyncHistory and the task
returns its summary."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from kombu.exceptions import OperationalError as BrokerError

from syncrunner.celery.app import app
from syncrunner.celery.enqueue import BrokerUnreachable, enqueue_paths
from syncrunner.celery.work import TargetUnreachable, run_specs
from syncrunner.core.errtext import one_line
from syncrunner.core.redact import redact
from syncrunner.runtime.settings import default_target_url
from syncrunner.runtime.strategy import RunOptions

RETRIED = (TargetUnreachable, BrokerError, BrokerUnreachable)


@app.task(name="syncrunner.run", autoretry_for=RETRIED, retry_backoff=5, retry_backoff_max=600,
          retry_jitter=True, max_retries=12)
def run(paths: list[str], flags: dict[str, Any], target: str, queued: dict[str, int]) -> dict[str, Any]:
    """Run one spec, or a folder's specs in `after:` order; returns the run summary."""
    return run_specs(paths, flags, target, queued)


@app.task(name="syncrunner.enqueue", autoretry_for=RETRIED, retry_backoff=5, retry_backoff_max=600,
          retry_jitter=True, max_retries=12)
def enqueue(paths: list[str], flags: dict[str, Any], expires_seconds: float) -> list[dict[str, Any]]:
    """What beat sends (beat.py): queue the paths as `syncrunner enqueue` would, on a worker, so a
    scheduled run is visible as `queued` in SyncHistory like any other."""
    try:
        queued = enqueue_paths(paths, RunOptions(**flags), default_target_url(), expires_seconds=expires_seconds)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as e:
        raise TargetUnreachable(redact(f"target unreachable: {one_line(e)}")) from None
    return [q.as_json() for q in queued]
