"""Scale-out on Celery (issue 26, docs/scale-out.md; `pip install syncrunner[celery]`).

A thin adapter: the Celery app (app.py), its tasks (tasks.py: run specs, enqueue for beat), the
`syncrunner enqueue` command (enqueue.py) and beat's schedule (beat.py). Locks, the run-slot limit,
heartbeats, checkpoints and SyncHistory are the runtime's own, in the target database, so workers
on any machine obey them. Nothing in syncrunner imports this package (the CLI loads `enqueue` by
name). Workers: `celery -A syncrunner.celery worker`; beat: `celery -A syncrunner.celery beat`."""
from syncrunner.celery.app import app

__all__ = ["app"]
