"""`syncrunner demo`: the whole product end to end on the embedded default, with no server.

Builds a Genius-shaped SQLite source (a few thousand rows, some of them bad), syncs every Genius spec
into a SQLite target, changes some source rows, syncs again incrementally, and shows what each run
did and the SyncHistory rows."""
from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from pathlib import Path

import click
import sqlalchemy as sa

from syncrunner.dburl import create_engine
from syncrunner.ops.report import summary_lines
from syncrunner.runtime.engine import run_spec
from syncrunner.runtime.ordering import run_order
from syncrunner.runtime.strategy import RunOptions
from syncrunner.spec.load import find_specs, load_spec


def specs_dir() -> Path:
    for candidate in (Path(__file__).resolve().parents[2] / "specs" / "genius", Path.cwd() / "specs" / "genius"):
        if candidate.is_dir():
            return candidate
    raise click.ClickException("specs/genius not found: run the demo from a syncrunner checkout")


def _run_all(target_url: str):
    specs = run_order([load_spec(p) for p in find_specs([str(specs_dir())])])
    results = [run_spec(s, RunOptions(), target_url) for s in specs]
    return results


def _echo_run(title: str, results, seconds: float) -> None:
    fetched = sum(r.stats.fetched for r in results)
    click.echo(f"\n== {title}: {len(results)} entities, {fetched:,} records in {seconds:.1f}s "
               f"({fetched / seconds if seconds else 0:,.0f} records/s)")
    for line in summary_lines(results):
        click.echo("  " + line)


def run_demo(workdir: str, size: int) -> int:
    from syncrunner.fixtures import genius

    out = Path(workdir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    source_url = f"sqlite:///{(out / 'genius_source.db').resolve()}"
    target_url = f"sqlite:///{(out / 'warehouse.db').resolve()}"
    os.environ["GENIUS_DB_URL"] = source_url

    click.echo(f"== Building a Genius-shaped source database: {source_url}")
    src = create_engine(source_url)
    genius.create_schema(src)
    counts = genius.populate(src, size=size, seed=42)
    click.echo(f"   {sum(counts.values()):,} rows in {len(counts)} tables "
               f"(naive New York times, zero dates, invalid emails, junk text, NULL timestamps)")

    t0 = time.monotonic()
    first = _run_all(target_url)
    _echo_run("First run (full: no SyncHistory yet)", first, time.monotonic() - t0)

    changed = genius.mutate(src, fraction=0.02, seed=7, now=dt.datetime.now(dt.timezone.utc))
    src.dispose()
    click.echo(f"\n== Changed the source: {sum(changed.values()):,} rows updated or added "
               f"({', '.join(f'{k} {v}' for k, v in changed.items() if v)})")

    t0 = time.monotonic()
    second = _run_all(target_url)
    _echo_run("Second run (incremental: from each entity's watermark)", second, time.monotonic() - t0)

    tgt = create_engine(target_url)
    with tgt.connect() as c:
        hist = c.execute(sa.text(
            "SELECT id, crm_source, sync_type, status, records_processed, records_created, "
            "records_updated, records_failed, watermark FROM sync_history ORDER BY id DESC LIMIT 8")).fetchall()
        reasons = c.execute(sa.text(
            "SELECT action, sync_type, field, COUNT(*) n, MIN(reason) example FROM sync_dead_letters "
            "GROUP BY action, sync_type, field ORDER BY action DESC, n DESC LIMIT 10")).fetchall()
    tgt.dispose()
    click.echo("\n== Latest SyncHistory rows (the full table: sync_history in the target)")
    click.echo(f"  {'id':>3} {'source':<28} {'status':<8} {'processed':>9} {'created':>8} {'updated':>8} "
               f"{'failed':>6}  watermark")
    for h in hist:
        click.echo(f"  {h.id:>3} {h.crm_source + '.' + h.sync_type:<28} {h.status:<8} {h.records_processed:>9,} "
                   f"{h.records_created:>8,} {h.records_updated:>8,} {h.records_failed:>6,}  {h.watermark or '-'}")
    click.echo("\n== Bad data kept in sync_dead_letters: rejected records (skipped, counted as failed) and "
               "values stored as NULL (on_invalid: null), each with the raw record and the reason")
    for r in reasons:
        click.echo(f"  {r.action:<9} {r.sync_type:<22} {r.field or '(record)':<14} {r.n:>5}  e.g. {r.example[:60]}")
    click.echo("  (the full list, with each raw record: SELECT * FROM sync_dead_letters; "
               "`syncrunner demo --verbose` shows the log lines)")
    click.echo(f"\nTarget database: {target_url}\nTry: .venv/bin/syncrunner plan specs/genius/appointments.yaml "
               f"--target {target_url}   (with GENIUS_DB_URL={source_url})")
    failed = [r for r in first + second if r.status == "failed"]
    return 1 if failed else 0
