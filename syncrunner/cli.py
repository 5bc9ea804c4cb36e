"""The `syncrunner` command line."""
from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

import click

from syncrunner.ops.clierrors import (EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, debug_option, reported,
                        resolve_target, target_option)
from syncrunner.core.redact import guard_streams
from syncrunner.ops.logsetup import LOG_FORMATS, setup_logging
from syncrunner.ops.report import print_summary
from syncrunner.spec.load import find_specs, load_spec
from syncrunner.spec.model import SpecError

if TYPE_CHECKING:
    from syncrunner.runtime.strategy import RunOptions

# What the commands need (SQLAlchemy, the engine, jsonschema, jinja2) is imported inside them:
# `--help`, `lint` and `docs` should not pay for a database stack they never use.

EXIT_INTERRUPTED = 130


class LazyGroup(click.Group):
    """Subcommands that live in their own modules, imported when named (click's documented
    lazy-loading pattern)."""

    def __init__(self, *args, lazy: dict[str, str], **kw):
        super().__init__(*args, **kw)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy[name].rsplit(":", 1)
            try:
                return getattr(importlib.import_module(module), attr)
            except ModuleNotFoundError as e:
                if e.name not in OPTIONAL_EXTRAS:
                    raise
                return _needs_extra(name, OPTIONAL_EXTRAS[e.name])
        return super().get_command(ctx, name)


# a library an optional extra brings -> the extra (pyproject.toml)
OPTIONAL_EXTRAS = {"celery": "celery", "kombu": "celery", "redis": "celery"}


def _needs_extra(name: str, extra: str) -> click.Command:
    """A command whose extra is not installed: listed, and says how to get it."""
    def fail(**_kw) -> None:
        raise click.UsageError(f"`syncrunner {name}` needs the {extra} extra: pip install 'syncrunner[{extra}]'")
    return click.Command(name, callback=fail, help=f"(needs pip install 'syncrunner[{extra}]')",
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                         params=[click.Argument(["args"], nargs=-1, required=False)])


# operator commands (issue 6): each lives in its own module
OPERATOR_COMMANDS = {"history": "syncrunner.ops.history:history_command", "health": "syncrunner.ops.health:health_command",
                     "init": "syncrunner.ops.init:init_command", "docs": "syncrunner.spec.docsgen:docs_command",
                     # needs the celery extra (pip install syncrunner[celery]); see docs/scale-out.md
                     "enqueue": "syncrunner.celery.enqueue:enqueue_command"}


@click.group(cls=LazyGroup, lazy=OPERATOR_COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="syncrunner")
def main() -> None:
    """Declarative CRM data sync: one YAML spec per entity, one generic runtime."""
    guard_streams()  # whatever a command prints is redacted (redact.py)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def lint(paths: tuple[str, ...]) -> None:
    """Validate specs (schema and semantic checks); prints file:line: key: message."""
    from syncrunner.ops.lint import lint_paths

    count, problems = lint_paths(list(paths))
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        click.echo(str(p), err=p.severity == "error")
    click.echo(f"{count} spec(s) checked, {len(errors)} error(s), {len(problems) - len(errors)} warning(s)")
    sys.exit(1 if errors else 0)


def _deprecated(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        click.echo(f"warning: {param.opts[0]} is deprecated; use --debug", err=True)
    return value


def run_options(f):
    """The universal flags (DESIGN.md §7)."""
    opts = [
        click.option("--full", is_flag=True, help="Fetch everything (ignore the last watermark); newer stored rows are kept."),
        click.option("--force", "--force-overwrite", "force", is_flag=True, help="Fetch everything and replace stored rows regardless of their timestamps."),
        click.option("--start-date", "--since", "start_date", metavar="YYYY-MM-DD", help="Fetch from this date (source time zone)."),
        click.option("--end-date", metavar="YYYY-MM-DD", help="Fetch up to and including this date."),
        click.option("--dry-run", is_flag=True, help="Fetch, map, validate and count; write nothing, not even SyncHistory."),
        click.option("--max-records", type=int, default=0, show_default=True, help="Stop after N records (0 = unlimited)."),
        click.option("--batch-size", type=int, default=None, help="Rows per bulk upsert (default: the spec's target.batch_size)."),
        click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="Set a run parameter a spec declares (`params:`); repeatable. Running a folder, it applies to the specs that declare it."),
        click.option("--skip-validation", is_flag=True, help="Skip validators and record rules (types are still enforced)."),
        click.option("--debug", is_flag=True, help="Verbose logging, including the SQL sent and HTTP request URLs (secrets redacted); tracebacks of failures."),
        click.option("--verbose", "--test", "legacy_debug", is_flag=True, hidden=True, callback=_deprecated, expose_value=True),
        target_option,
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _make_options(kw: dict) -> RunOptions:
    from syncrunner.runtime.strategy import RunOptions
    return RunOptions(full=kw["full"], force=kw["force"], start_date=kw["start_date"],
                      end_date=kw["end_date"], dry_run=kw["dry_run"], max_records=kw["max_records"],
                      batch_size=kw["batch_size"], skip_validation=kw["skip_validation"],
                      debug=kw["debug"] or kw["legacy_debug"], wait=kw.get("wait") or 0.0,
                      allow_mass_delete=bool(kw.get("allow_mass_delete")))


def _load_all(paths: tuple[str, ...], params: tuple[str, ...] = ()):
    """Every spec with the run parameters in effect, or exit before anything is touched: 2 if an
    environment variable a spec needs is not set or a `--param` is bad (how the command was
    called), 1 for a broken spec."""
    from syncrunner.spec.params import ParamError, apply, parse_assignments

    specs, errors = [], []
    for path in find_specs(list(paths)):
        try:
            specs.append(load_spec(path))
        except SpecError as e:
            errors.append(e)
    for e in errors:
        click.echo(str(e), err=True)
    if errors:
        sys.exit(EXIT_USAGE if any(e.missing_env for e in errors) else EXIT_FAILED)
    try:
        return apply(specs, parse_assignments(params))
    except ParamError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_USAGE)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@run_options
@click.option("--wait", type=float, default=0.0, show_default=True, metavar="SECONDS",
              help="If a sync of the same entity is running, wait up to SECONDS for it (0: exit at once, code 4).")
@click.option("--allow-mass-delete", is_flag=True,
              help="Let a delete sweep remove more than the spec's deletes.max_delete_fraction.")
@click.option("--only", multiple=True, metavar="ENTITY", help="Run only these entities (repeatable; `appointments` or `genius.appointments`).")
@click.option("--exclude", multiple=True, metavar="ENTITY", help="Skip these entities (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary (one object per entity) on stdout.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True, help="Log lines on stderr: text, or one JSON object per line for log shippers.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress per entity (a bar on a terminal, a log line per chunk otherwise).")
@click.option("--count", "count_total", is_flag=True, help="Count the window's records first, for a progress total and percentage: one COUNT query per entity on the source (off by default: the source is usually a production database).")
def run(paths: tuple[str, ...], only: tuple[str, ...], exclude: tuple[str, ...], as_json: bool, log_format: str,
        progress: bool, count_total: bool, **kw) -> None:
    """Run the specs at PATHS (files or folders), dependencies (`after:`) first.

    One entity's failure does not stop the others. Runs hold a lock per entity and one of
    SYNCRUNNER_MAX_CONCURRENT (default 2) run slots in the target database; SIGTERM/SIGINT stop
    after the current chunk (a second one at once). Exit code: 0 all succeeded, 3 some partial,
    1 some failed, 4 an entity was already running, 2 bad usage (refused before anything is
    touched)."""
    from syncrunner.runtime.signals import StoppedEarly, stopping_early
    with stopping_early():  # SIGTERM/SIGINT before a run starts: say so and exit, no bare -15
        try:
            with reported(kw["debug"] or kw["legacy_debug"]):
                _run(paths, only, exclude, as_json, log_format, progress, progress and count_total, kw)
        except StoppedEarly as e:
            click.echo(f"stopped by {e.signal_name} while starting: nothing was written", err=True)
            sys.exit(EXIT_FAILED)


def _run(paths: tuple[str, ...], only: tuple[str, ...], exclude: tuple[str, ...], as_json: bool,
         log_format: str, progress: bool, count_total: bool, kw: dict) -> None:
    """The body of `run`."""
    from syncrunner.ops.progress import ProgressObserver
    from syncrunner.runtime.engine import run_spec
    from syncrunner.runtime.memory import return_freed_memory
    from syncrunner.runtime.ordering import OrderError, run_order, select
    from syncrunner.runtime.signals import StoppedEarly
    from syncrunner.runtime.strategy import OptionError, check_options, check_spec_options

    opts = _make_options(kw)
    setup_logging(opts.debug, log_format)
    return_freed_memory()
    try:
        check_options(opts)
    except OptionError as e:
        raise click.UsageError(str(e)) from None
    target = resolve_target(kw["target_url"])
    specs = _load_all(paths, kw["params"])
    try:
        specs = run_order(select(specs, only, exclude))
        for spec in specs:
            check_spec_options(spec, opts)
    except (OrderError, OptionError) as e:
        raise click.UsageError(str(e)) from None
    results = []
    # JSON logs go to a shipper even when started from a terminal: chunk lines, not a bar
    observers = [ProgressObserver(tty=False if log_format == "json" else None)] if progress else []
    for spec in specs:
        try:
            results.append(run_spec(spec, opts, target, observers=observers, count_total=count_total))
        except OptionError as e:
            raise click.UsageError(str(e)) from None
        except StoppedEarly as e:  # before this spec's run started: the ones before it are reported
            if not results:
                raise
            click.echo(f"stopped by {e.signal_name} before {spec.name} started: nothing of it was written",
                       err=True)
            _report(results, EXIT_FAILED, as_json)
        except KeyboardInterrupt:  # a second signal: the run is recorded failed, stop everything
            _report(results, EXIT_INTERRUPTED, as_json)
        if results[-1].error and results[-1].error.startswith("interrupted"):
            break  # a stop request ends the whole command, not just this spec
    _report(results, _exit_code(results), as_json)


def _report(results, code: int, as_json: bool) -> None:
    from syncrunner.ops.summary import run_json

    if as_json:
        click.echo(run_json(results, code))
    else:
        print_summary(results)
    sys.exit(code)


def _exit_code(results) -> int:
    if any(r.status == "failed" for r in results):
        return EXIT_FAILED
    if any(r.status == "locked" for r in results):
        return EXIT_LOCKED
    if any(r.status == "partial" for r in results):
        return EXIT_PARTIAL
    return EXIT_OK


@main.command()
@click.argument("spec_path", type=click.Path(exists=True, dir_okay=False))
@run_options
def plan(spec_path: str, **kw) -> None:
    """Show what a run would do, moving no data: the window and why, the SQL or first request, the DDL."""
    from syncrunner.runtime.planner import plan_text
    from syncrunner.runtime.strategy import OptionError, check_options, check_spec_options

    opts = _make_options(kw)
    try:
        check_options(opts)
        target = resolve_target(kw["target_url"])
        spec, = _load_all((spec_path,), kw["params"])
        check_options(opts, spec.source.timezone)
        check_spec_options(spec, opts)
    except OptionError as e:
        raise click.UsageError(str(e)) from None
    try:
        with reported(opts.debug, target):
            text = plan_text(spec, opts, target)
    except SpecError as e:  # a name the source query does not return
        click.echo(str(e), err=True)
        sys.exit(EXIT_FAILED)
    click.echo(text)


@main.command()
@click.option("--stale-after", default="10m", show_default=True, metavar="DURATION",
              help="A running sync whose heartbeat is older than this (30s, 10m, 1h) is dead.")
@target_option
@debug_option
def sweep(stale_after: str, target_url: str | None, debug: bool) -> None:
    """Mark runs whose heartbeat is stale `failed` ("heartbeat lost"); a run whose lock is still
    held is alive (maybe hung) and is only reported. A swept run's checkpoint stays resumable.
    A `queued` run (syncrunner enqueue) whose task expired before it started is marked failed too."""
    from syncrunner.runtime.history import sweep_stale, sweep_vanished
    from syncrunner.runtime.target import make_engine, target_exists
    from syncrunner.spec.load import parse_duration

    setup_logging(debug)
    try:
        age = parse_duration(stale_after)
    except ValueError:
        raise click.UsageError(f"--stale-after {stale_after!r} is not a duration (e.g. 30s, 10m, 2h)") from None
    url = resolve_target(target_url)
    if not target_exists(url):
        click.echo("no target database yet: nothing to sweep")
        return
    engine = make_engine(url)
    try:
        with reported(debug, url):
            swept, skipped = sweep_stale(engine, age)
            vanished = sweep_vanished(engine)
    finally:
        engine.dispose()
    for r in swept:
        click.echo(f"swept run {r.id} {r.crm_source}.{r.sync_type} started {r.start_time.isoformat()}: "
                   f"failed (heartbeat lost)")
    for r in skipped:
        click.echo(f"run {r.id} {r.crm_source}.{r.sync_type}: heartbeat stale but its lock is held "
                   f"(process alive, maybe hung): not swept", err=True)
    for r in vanished:
        click.echo(f"swept queued run {r.id} {r.crm_source}.{r.sync_type} queued {r.start_time.isoformat()}: "
                   f"failed (its task expired before it started)")
    click.echo(f"{len(swept) + len(vanished)} run(s) swept, {len(skipped)} stale but alive")


@main.command()
@click.option("--dir", "workdir", default="demo-output", show_default=True, help="Where the demo databases go.")
@click.option("--size", default=2000, show_default=True, help="Rows in the big demo tables.")
@click.option("--verbose", is_flag=True, help="Show the sync logs (validation warnings for every bad value).")
def demo(workdir: str, size: int, verbose: bool) -> None:
    """Build a small Genius-shaped SQLite source, sync it, change it, sync again: end to end, no server."""
    import logging

    from syncrunner.ops.demo import run_demo

    setup_logging(False)
    if not verbose:  # the demo's point is the summary; its bad records are listed from the table
        logging.getLogger().setLevel(logging.ERROR)
    sys.exit(run_demo(workdir, size))


def entry() -> None:
    """The console script."""
    main()


if __name__ == "__main__":
    entry()
