"""`syncrunner history`: the SyncHistory rows as a table, or JSON."""
from __future__ import annotations

import json
import sys

import click

from syncrunner.core.redact import redact_url
from syncrunner.ops.clierrors import debug_option, reported, resolve_target, target_option
from syncrunner.ops.runs import NoHistory, RunView, load_runs, split_entity
from syncrunner.ops.table import format_table
from syncrunner.runtime.history import STATUSES

MAX_ERROR_CHARS = 60


def history_lines(runs: list[RunView]) -> list[str]:
    headers = ["id", "source", "status", "started (UTC)", "window", "processed", "created", "updated",
               "failed", "seconds", "rec/s", "error"]
    rows = []
    for r in runs:
        error = (r.error or "").replace("\n", " ")
        if len(error) > MAX_ERROR_CHARS:
            error = error[:MAX_ERROR_CHARS - 3] + "..."
        rows.append([r.id, r.source, r.status, r.start_time.strftime("%Y-%m-%d %H:%M:%S"), r.window_text,
                     f"{r.processed:,}", f"{r.created:,}", f"{r.updated:,}", f"{r.failed:,}",
                     "" if r.duration_seconds is None else f"{r.duration_seconds:.1f}",
                     "" if r.records_per_second is None else f"{r.records_per_second:,.0f}", error])
    return format_table(headers, rows, right={0, 5, 6, 7, 8, 9, 10})


@click.command("history")
@click.option("--crm", help="Only this CRM (SyncHistory.crm_source).")
@click.option("--entity", help="Only this entity (`appointments` or `genius.appointments`).")
@click.option("--status", type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True, help="Newest N runs (0 = all).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@target_option
@debug_option
def history_command(crm: str | None, entity: str | None, status: str | None, limit: int, as_json: bool,
                    target_url: str | None, debug: bool) -> None:
    """Show recent runs from SyncHistory, newest first: status, window, counts, duration, rate, error.
    Exit 1 if the target cannot be read."""
    target = resolve_target(target_url)
    crm, entity = split_entity(crm, entity)
    try:
        with reported(debug, target):
            runs = load_runs(target, crm=crm, entity=entity, status=status, limit=limit or None)
    except NoHistory:
        runs = []
        click.echo(f"no SyncHistory in {redact_url(target)}: nothing has run against this target", err=True)
    if as_json:
        click.echo(json.dumps([r.as_json() for r in runs], indent=2))
    elif runs:
        for line in history_lines(runs):
            click.echo(line)
    sys.exit(0)
