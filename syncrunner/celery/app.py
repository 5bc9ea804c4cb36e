"""The Celery app, configured from the environment (runtime/settings.py):
SYNCRUNNER_BROKER_URL, SYNCRUNNER_RESULT_BACKEND, SYNCRUNNER_QUEUE, SYNCRUNNER_VISIBILITY_TIMEOUT,
SYNCRUNNER_SCHEDULES (beat)."""
from __future__ import annotations

from celery import Celery

from syncrunner.core.redact import register_url_password
from syncrunner.runtime.settings import (broker_url_from_env, queue_from_env, result_backend_from_env,
                                         schedules_file_from_env, visibility_timeout_from_env)


def make_app() -> Celery:
    broker, backend = broker_url_from_env(), result_backend_from_env()
    for url in filter(None, (broker, backend)):
        register_url_password(url)  # a Redis password never reaches a log line or an error
    app = Celery("syncrunner", broker=broker, backend=backend, include=["syncrunner.celery.tasks"])
    visibility = visibility_timeout_from_env()
    transport = {
        # Redis hands a task that was taken but never acknowledged (its worker died) to another
        # worker after this many seconds; it must be longer than the longest run (docs/scale-out.md)
        "visibility_timeout": visibility,
        # how often workers look for such tasks: kombu's default is a scan every ~100 s
        "unacked_restore_interval": min(60.0, max(1.0, visibility / 5)),
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 10,
    }
    app.conf.update(
        task_acks_late=True,              # acknowledged when the run ends, not when it starts
        task_reject_on_worker_lost=True,  # a worker killed mid-run: the task goes back on the queue
        worker_prefetch_multiplier=1,     # a worker holds no task it is not running (late acks)
        task_default_queue=queue_from_env(),
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        task_ignore_result=backend is None,
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_track_started=True, task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        enable_utc=True, timezone="UTC",
    )
    schedules = schedules_file_from_env()
    if schedules:  # for `celery -A syncrunner.celery beat`
        from syncrunner.celery.beat import configure_beat
        configure_beat(app, schedules)
    return app


app = make_app()
