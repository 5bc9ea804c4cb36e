"""`syncrunner enqueue PATH...`: put specs on the Celery queue and record each as `queued` in
SyncHistory, so `history` and `health` show waiting work.

Each PATH is one task: a spec file, or a folder whose specs a worker runs in `after:` order. The
broker is checked before anything is recorded; the queued rows are committed before their tasks
are sent (a fast worker must find its row), and the rows of tasks the broker did not take are
deleted again: nothing is left half-queued. A task that is not started before it expires
(`--expires`) is discarded by the workers, and `syncrunner sweep` marks its row failed."""
from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from syncrunner.celery.app import app
from syncrunner.cli import _make_options, run_options
from syncrunner.core.errtext import one_line
from syncrunner.core.redact import redact, redact_url
from syncrunner.ops.clierrors import EXIT_FAILED, reported, resolve_target
from syncrunner.runtime import history
from syncrunner.runtime.ordering import OrderError, run_order
from syncrunner.runtime.settings import broker_url_from_env, queue_from_env
from syncrunner.runtime.strategy import OptionError, RunOptions, check_options
from syncrunner.runtime.target import make_engine
from syncrunner.spec.load import check_spec, find_specs, parse_duration
from syncrunner.spec.model import Spec, SpecError


class BrokerUnreachable(RuntimeError):
    """The broker did not take the connection or a task."""


@dataclass
class Queued:
    """One spec's queued row and the task that will run it."""
    run_id: int
    name: str
    task_id: str
    spec: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def spec_groups(paths: list[str]) -> list[list[Spec]]:
    """One group (one task) per PATH: its specs, absolute paths, in `after:` order. Read as lint
    reads them: the sources' ${VARS} are the workers' business, not the enqueuer's."""
    groups = []
    for path in paths:
        specs, problems = [], []
        for f in find_specs([str(Path(path).resolve())]):
            spec, probs = check_spec(f, strict_env=False)
            problems += [p for p in probs if p.severity == "error"]
            if spec is not None:
                specs.append(spec)
        if problems:
            raise SpecError(problems)
        groups.append(run_order(specs))
    return [g for g in groups if g]


def check_broker() -> None:
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5, timeout=10)
    except Exception as e:  # noqa: BLE001 - kombu raises several kinds; all mean "not reachable"
        raise BrokerUnreachable(_broker_problem(e)) from None


def _broker_problem(e: BaseException) -> str:
    return redact(f"broker unreachable ({redact_url(broker_url_from_env())}): {one_line(e)}")


def enqueue_paths(paths: list[str], opts: RunOptions, target_url: str, *,
                  expires_seconds: float) -> list[Queued]:
    """Record and send one task per PATH; returns the queued rows. Raises BrokerUnreachable
    (nothing left queued but the tasks the broker took), SpecError, OrderError."""
    groups = spec_groups(paths)
    check_broker()
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=expires_seconds)
    engine = make_engine(target_url)
    try:
        tasks = _record(engine, groups, opts, expires)
        sent: list[Queued] = []
        for task_id, group, rows in tasks:
            try:
                app.send_task("syncrunner.run", task_id=task_id, queue=queue_from_env(), expires=expires,
                              retry=False, args=[[s.path for s in group], opts.flags(),
                                                 redact_url(target_url), {q.spec: q.run_id for q in rows}])
            except Exception as e:  # noqa: BLE001 - the broker went away while sending
                with engine.begin() as conn:
                    history.delete_queued(conn, [q.run_id for _, _, rs in tasks for q in rs if q not in sent])
                raise BrokerUnreachable(_broker_problem(e) + f" ({len(sent)} run(s) were queued before)") from None
            sent += rows
        return sent
    finally:
        engine.dispose()


def _record(engine, groups: list[list[Spec]], opts: RunOptions,
            expires: dt.datetime) -> list[tuple[str, list[Spec], list[Queued]]]:
    """The queued rows, committed in one transaction; one task id per group."""
    out = []
    with engine.begin() as conn:
        history.ensure_tables(conn)
        for group in groups:
            task_id = str(uuid.uuid4())
            rows = []
            for spec in group:
                config = {"task_id": task_id, "queue": queue_from_env(), "expires_at": expires.isoformat(),
                          "spec": spec.path, "flags": opts.flags(), "host": socket.gethostname(),
                          "pid": os.getpid()}
                rows.append(Queued(history.add_queued(conn, spec.crm, spec.entity, config), spec.name,
                                   task_id, spec.path))
            out.append((task_id, group, rows))
    return out


@click.command("enqueue")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@run_options
@click.option("--wait", type=float, default=0.0, show_default=True, metavar="SECONDS",
              help="A worker finding a sync of the same entity running waits up to SECONDS for it "
                   "(0: the queued run is recorded skipped).")
@click.option("--allow-mass-delete", is_flag=True,
              help="Let a delete sweep remove more than the spec's deletes.max_delete_fraction.")
@click.option("--expires", default="24h", show_default=True, metavar="DURATION",
              help="A task not started within this time is dropped (and swept as failed).")
def enqueue_command(paths: tuple[str, ...], expires: str, **kw) -> None:
    """Queue the specs at PATHS for Celery workers (each PATH is one task: a spec, or a folder run
    in `after:` order) and record them `queued` in SyncHistory. Workers use their own
    SYNCRUNNER_TARGET_URL, which must name the same target. Exit 1 if the broker or the target is
    unreachable (nothing is left queued), 2 for bad usage."""
    opts = _make_options(kw)
    try:
        check_options(opts)
        seconds = parse_duration(expires).total_seconds()
    except (OptionError, ValueError) as e:
        raise click.UsageError(str(e) if isinstance(e, OptionError) else
                               f"--expires {expires!r} is not a duration (e.g. 30m, 24h)") from None
    if opts.dry_run or seconds <= 0:
        raise click.UsageError("--dry-run is not queued: use `syncrunner run --dry-run`" if opts.dry_run
                               else "--expires must be more than 0")
    target = resolve_target(kw["target_url"])
    try:
        with reported(opts.debug, target):
            queued = enqueue_paths(list(paths), opts, target, expires_seconds=seconds)
    except SpecError as e:
        click.echo(str(e), err=True)
        sys.exit(EXIT_FAILED)
    except (BrokerUnreachable, OrderError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_FAILED)
    for q in queued:
        click.echo(f"queued run {q.run_id} {q.name} (task {q.task_id})")
    click.echo(f"{len(queued)} run(s) queued on {queue_from_env()} at {redact_url(broker_url_from_env())}")
