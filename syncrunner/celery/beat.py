"""Celery beat's schedule from schedules.yaml (SYNCRUNNER_SCHEDULES; spec/schedules.py checks it).
Each entry sends `syncrunner.enqueue` at its cron times: a worker queues the specs as
`syncrunner enqueue` does, so scheduled runs are recorded `queued` like any other."""
from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from syncrunner.spec.schedules import Schedules, load_schedules


def beat_schedule(schedules: Schedules) -> dict[str, dict[str, Any]]:
    return {
        s.name: {"task": "syncrunner.enqueue", "schedule": crontab(**s.crontab_fields()),
                 "args": [[s.run], s.flags, s.expires_seconds]}
        for s in schedules.entries
    }


def configure_beat(app, path: str) -> None:
    """Load the schedules file into the app (a broken file raises SpecError: file:line: key)."""
    schedules = load_schedules(path)
    app.conf.timezone = schedules.timezone
    app.conf.beat_schedule = beat_schedule(schedules)
