"""`syncrunner health`: are the syncs working? The reference guide's SyncHealthChecker as a command a
monitor can call: exit code 0 when every source is healthy, 1 when any is not.

A source (one crm.entity, or one crm with `--by crm`) is healthy when, over the last `--hours`:
  * it has at least one finished run (runs still in progress are not judged);
  * successes / finished runs >= `--min-success-rate`;
  * its last success ended no more than `--max-age-hours` ago (default: `--hours`).
`partial` (finished, some records dead-lettered) counts as a finished run but not as a success,
unless `--partial-ok`: a source that dead-letters records every night needs someone to look. A run
left `running` with no heartbeat for `--stale-minutes` died without recording it: it counts as
failed (`syncrunner sweep` marks such rows for good). A `queued` run (syncrunner enqueue) is waiting
and not judged until its task's expiry passes; then it counts as failed. A `skipped` one (gated off
by its spec's `enabled:`) is not judged."""
from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import asdict, dataclass, field

import click

from syncrunner.core.redact import redact_url
from syncrunner.ops.clierrors import debug_option, ordinary, resolve_target, target_option, target_problem
from syncrunner.ops.runs import NoHistory, RunView, age_text, last_ended, load_runs, split_entity
from syncrunner.ops.table import format_table
from syncrunner.runtime.history import queued_expired

EXIT_HEALTHY, EXIT_UNHEALTHY = 0, 1


@dataclass(frozen=True)
class HealthPolicy:
    hours: float = 24.0
    min_success_rate: float = 0.8
    max_age_hours: float | None = None  # None: same as hours
    partial_ok: bool = False
    stale_minutes: float = 60.0
    by: str = "entity"  # entity | crm

    @property
    def max_age(self) -> float:
        return self.hours if self.max_age_hours is None else self.max_age_hours

    def is_success(self, status: str) -> bool:
        return status == "success" or (self.partial_ok and status == "partial")


@dataclass
class SourceHealth:
    source: str
    runs: int = 0            # finished runs in the window (stale `running` rows count as failed)
    success: int = 0
    partial: int = 0
    failed: int = 0
    running: int = 0         # in progress, not judged
    queued: int = 0          # waiting on the Celery queue (syncrunner enqueue), not judged
    skipped: int = 0         # gated off by the spec's `enabled:` when its task ran, not judged
    success_rate: float | None = None
    last_success: str | None = None      # ISO time (end of the run)
    last_success_age_hours: float | None = None
    healthy: bool = False
    problems: list[str] = field(default_factory=list)


def _key(run: RunView, by: str) -> str:
    return run.crm if by == "crm" else run.source


def _stale(run: RunView, now: dt.datetime, policy: HealthPolicy) -> bool:
    beat = run.heartbeat_at or run.start_time
    return (now - beat).total_seconds() > policy.stale_minutes * 60


def assess(runs: list[RunView], last_success: dict[tuple[str, str], dt.datetime], policy: HealthPolicy,
           now: dt.datetime, expected: list[str] = ()) -> list[SourceHealth]:
    """Judge each source from its runs in the window and the end of its last success (which may be
    older than the window)."""
    since = now - dt.timedelta(hours=policy.hours)
    result: dict[str, SourceHealth] = {name: SourceHealth(name) for name in expected}
    last_ok: dict[str, dt.datetime] = {}
    for (crm, entity), ended in last_success.items():
        key = crm if policy.by == "crm" else f"{crm}.{entity}"
        result.setdefault(key, SourceHealth(key))
        # per CRM, the stalest entity decides: one entity that stopped must not hide behind others
        last_ok[key] = min(last_ok.get(key, ended), ended) if policy.by == "crm" else ended
    for run in runs:
        key = _key(run, policy.by)
        sh = result.setdefault(key, SourceHealth(key))
        if run.start_time < since:
            continue
        if run.status == "running" and not _stale(run, now, policy):
            sh.running += 1
            continue
        if run.status == "queued" and not queued_expired(run.configuration, now):
            sh.queued += 1
            continue
        if run.status == "skipped":
            sh.skipped += 1
            continue
        sh.runs += 1
        if run.status == "success":
            sh.success += 1
        elif run.status == "partial":
            sh.partial += 1
        else:  # failed, running with a stale heartbeat (the process died), queued past its expiry
            sh.failed += 1
    for key, sh in result.items():
        good = sh.success + (sh.partial if policy.partial_ok else 0)
        sh.success_rate = round(good / sh.runs, 4) if sh.runs else None
        if key in last_ok:
            sh.last_success = last_ok[key].isoformat()
            sh.last_success_age_hours = round((now - last_ok[key]).total_seconds() / 3600, 2)
        if sh.runs == 0:
            waiting = [f"{n} {what}" for n, what in ((sh.running, "in progress"), (sh.queued, "queued"),
                                                     (sh.skipped, "skipped")) if n]
            sh.problems.append(f"no finished run in the last {policy.hours:g}h"
                               + (f" ({', '.join(waiting)})" if waiting else ""))
        elif sh.success_rate < policy.min_success_rate:
            sh.problems.append(f"success rate {sh.success_rate:.0%} < {policy.min_success_rate:.0%}")
        if sh.last_success_age_hours is None:
            sh.problems.append("never succeeded")
        elif sh.last_success_age_hours > policy.max_age:
            sh.problems.append(f"last success {age_text(sh.last_success_age_hours * 3600)} ago "
                               f"> {policy.max_age:g}h")
        sh.healthy = not sh.problems
    return [result[k] for k in sorted(result)]


def health_lines(sources: list[SourceHealth], now: dt.datetime) -> list[str]:
    headers = ["source", "health", "runs", "success", "partial", "failed", "queued", "rate", "last success",
               "problem"]
    rows = [[s.source, "OK" if s.healthy else "UNHEALTHY", s.runs, s.success, s.partial, s.failed, s.queued,
             "-" if s.success_rate is None else f"{s.success_rate:.0%}",
             "never" if s.last_success_age_hours is None else age_text(s.last_success_age_hours * 3600) + " ago",
             "; ".join(s.problems)] for s in sources]
    bad = sum(not s.healthy for s in sources)
    lines = format_table(headers, rows, right={2, 3, 4, 5, 6, 7})
    lines.append(f"{len(sources)} source(s), {bad} unhealthy (checked {now:%Y-%m-%d %H:%M} UTC)")
    return lines


def _unreachable(problem: str, target: str, now: dt.datetime, as_json: bool) -> None:
    """The target cannot be read: unhealthy, and a monitor's one line says why."""
    if as_json:
        click.echo(json.dumps({"healthy": False, "checked_at": now.isoformat(), "target": redact_url(target),
                               "error": problem, "sources": []}, indent=2))
    click.echo(f"UNHEALTHY: {problem}", err=True)
    sys.exit(EXIT_UNHEALTHY)


def _expected_sources(paths: tuple[str, ...], by: str) -> list[str]:
    """Enabled specs under PATHS are expected to have run, so a source that never ran is reported."""
    from syncrunner.spec.load import check_spec, find_specs

    names: set[str] = set()
    for path in find_specs(list(paths)):
        spec, _ = check_spec(path, strict_env=False)
        if spec is not None and spec.enabled:
            names.add(spec.crm if by == "crm" else spec.name)
    return sorted(names)


@click.command("health")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=str))
@click.option("--crm", help="Only this CRM.")
@click.option("--entity", help="Only this entity (`appointments` or `genius.appointments`).")
@click.option("--hours", type=click.FloatRange(min=0, min_open=True), default=24, show_default=True,
              help="Judge the runs started in the last N hours.")
@click.option("--min-success-rate", type=click.FloatRange(0, 1), default=0.8, show_default=True,
              help="Successes / finished runs needed to be healthy.")
@click.option("--max-age-hours", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The last success must be at most this old  [default: --hours].")
@click.option("--partial-ok", is_flag=True, help="Count `partial` runs as successes.")
@click.option("--stale-minutes", type=click.FloatRange(min=0, min_open=True), default=60, show_default=True,
              help="A `running` row with no heartbeat for this long counts as failed.")
@click.option("--by", type=click.Choice(["entity", "crm"]), default="entity", show_default=True,
              help="One verdict per crm.entity, or per CRM (as the reference guide's checker).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@target_option
@debug_option
def health_command(paths: tuple[str, ...], crm: str | None, entity: str | None, hours: float,
                   min_success_rate: float, max_age_hours: float | None, partial_ok: bool,
                   stale_minutes: float, by: str, as_json: bool, target_url: str | None, debug: bool) -> None:
    """Per source: success rate of recent runs and age of the last success. Exit 0 healthy, 1 not
    (also when the target is unreachable).

    PATHS (optional spec files or folders): judge exactly their enabled entities, so one that never
    ran is reported, and one that was retired (still in SyncHistory) is not."""
    policy = HealthPolicy(hours, min_success_rate, max_age_hours, partial_ok, stale_minutes, by)
    target = resolve_target(target_url)
    crm, entity = split_entity(crm, entity)
    now = dt.datetime.now(dt.timezone.utc)
    expected = [n for n in _expected_sources(paths, by)
                if (not crm or n.split(".")[0] == crm) and (not entity or n.endswith("." + entity))]
    statuses = ("success", "partial") if partial_ok else ("success",)
    try:
        runs = load_runs(target, crm=crm, entity=entity, started_after=now - dt.timedelta(hours=hours))
        last_success = last_ended(target, statuses, crm=crm, entity=entity)
    except NoHistory:
        runs, last_success = [], {}
    except ordinary() as e:
        if debug:
            raise
        _unreachable(target_problem(e, target), target, now, as_json)
    sources = assess(runs, last_success, policy, now, expected)
    if paths:  # the specs name what should run: retired entities' old rows must not alarm forever
        sources = [s for s in sources if s.source in set(expected)]
    healthy = bool(sources) and all(s.healthy for s in sources)
    if as_json:
        click.echo(json.dumps({"healthy": healthy, "checked_at": now.isoformat(),
                               "target": redact_url(target), "policy": asdict(policy) | {"max_age_hours": policy.max_age},
                               "sources": [asdict(s) for s in sources]}, indent=2))
    elif sources:
        for line in health_lines(sources, now):
            click.echo(line)
    if not sources:
        click.echo(f"UNHEALTHY: no SyncHistory for the selected sources in {redact_url(target)}", err=True)
    sys.exit(EXIT_HEALTHY if healthy else EXIT_UNHEALTHY)
