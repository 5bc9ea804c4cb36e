"""Human-readable run summaries, shared by `run` and `demo`."""
from __future__ import annotations

import click

from syncrunner.core.redact import redact


def summary_lines(results) -> list[str]:
    lines = [f"{'entity':<40} {'status':<8} {'fetched':>9} {'created':>9} {'updated':>9} "
             f"{'unchanged':>9} {'failed':>7} {'seconds':>8}"]
    for r in results:
        s = r.stats
        lines.append(f"{r.spec.name:<40} {r.status:<8} {s.fetched:>9,} {s.created:>9,} {s.updated:>9,} "
                     f"{s.unchanged:>9,} {s.failed:>7,} {r.seconds:>8.1f}")
        if r.error:
            lines.append(f"  error: {redact(r.error)}")
        lines.extend(f"  {note}" for note in r.notes if note != "disabled")
    total = sum(r.stats.fetched for r in results)
    secs = sum(r.seconds for r in results)
    if len(results) > 1:
        lines.append(f"{'total':<40} {'':<8} {total:>9,} {sum(r.stats.created for r in results):>9,} "
                     f"{sum(r.stats.updated for r in results):>9,} "
                     f"{sum(r.stats.unchanged for r in results):>9,} "
                     f"{sum(r.stats.failed for r in results):>7,} {secs:>8.1f}")
    return lines


def print_summary(results) -> None:
    for line in summary_lines(results):
        click.echo(line)
