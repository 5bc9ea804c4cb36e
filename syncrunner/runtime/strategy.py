"""Which window a run fetches (DESIGN.md §4), first match wins:
--start-date, then --full/--force, then the last completed run's watermark minus lookback, then all.
A failed run whose window is the one chosen again is resumed from its checkpoint."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from syncrunner.core.window import Window, iso_text
from syncrunner.runtime import history
from syncrunner.spec.model import Spec
from syncrunner.spec.params import as_config as params_config

TIME_CURSORS = ("datetime", "date")  # cursor types --start-date / --end-date can bound
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?")


class OptionError(ValueError):
    """A command-line value that is refused before anything is touched."""


@dataclass
class RunOptions:
    full: bool = False
    force: bool = False
    start_date: str | None = None
    end_date: str | None = None
    dry_run: bool = False
    max_records: int = 0
    batch_size: int | None = None
    skip_validation: bool = False
    debug: bool = False
    wait: float = 0.0                 # seconds to wait for a running sync of the same entity
    allow_mass_delete: bool = False   # let a delete sweep pass max_delete_fraction

    def flags(self) -> dict:
        """What SyncHistory.configuration records (no secrets live here)."""
        return {k: v for k, v in self.__dict__.items()}


def parse_date_option(name: str, value: str | None, tz: str) -> dt.datetime | None:
    """--start-date / --end-date: YYYY-MM-DD (or YYYY-MM-DDTHH:MM[:SS]) in the source zone -> UTC.
    Anything else is refused with a clear message before any connection is made."""
    if value is None:
        return None
    v = value.strip()
    if _DATE.fullmatch(v):
        try:
            d = dt.datetime.combine(dt.date.fromisoformat(v), dt.time())
        except ValueError as e:
            raise OptionError(f"{name} {value!r} is not a valid date: {e}") from None
    elif _DATETIME.fullmatch(v):
        try:
            d = dt.datetime.fromisoformat(v)
        except ValueError as e:
            raise OptionError(f"{name} {value!r} is not a valid date-time: {e}") from None
    else:
        raise OptionError(f"{name} {value!r} is not a date: expected YYYY-MM-DD")
    return d.replace(tzinfo=ZoneInfo(tz)).astimezone(dt.timezone.utc)


def check_options(opts: RunOptions, tz: str = "UTC") -> None:
    """Refuse bad option values up front."""
    since = parse_date_option("--start-date", opts.start_date, tz)
    until = _end_of_day(opts.end_date, tz)  # --end-date names the last day included
    if since and until and until <= since:
        raise OptionError("--end-date must be after --start-date")
    if opts.max_records < 0:
        raise OptionError("--max-records must be 0 (unlimited) or more")
    if opts.wait < 0:
        raise OptionError("--wait must be 0 (do not wait) or more seconds")
    if opts.batch_size is not None and opts.batch_size < 1:
        raise OptionError("--batch-size must be at least 1")


def parse_watermark(text: str | None, cursor_type: str | None) -> Any:
    if text is None:
        return None
    if cursor_type == "datetime":
        return dt.datetime.fromisoformat(text)
    if cursor_type == "date":
        return dt.date.fromisoformat(text)
    if cursor_type == "integer":
        return int(text)
    return text


def format_watermark(value: Any) -> str | None:
    return iso_text(value)


def decide(spec: Spec, opts: RunOptions, conn: sa.Connection | None, *, dead_running: bool = False) -> Window:
    """conn: a connection to the target with the history tables, or None when there are none yet.
    `dead_running`: a `running` latest run is dead (nobody holds its lock); a real run would mark
    it failed first and resume it, so a read-only caller (plan, --dry-run) treats it as failed."""
    tz = spec.source.timezone
    end = _end_of_day(opts.end_date, tz)
    start = parse_date_option("--start-date", opts.start_date, tz)
    cursor_type = spec.fields[spec.cursor_field].type if spec.cursor_field else None
    dated = cursor_type not in TIME_CURSORS  # an id cursor: the dates go to start_date/end_date
    until = None if dated else end
    if not spec.source.cursor:
        window = Window("full", "the spec has no cursor: every run is a full run", until=None)
    elif opts.start_date:
        window = Window("since", f"--start-date {opts.start_date}" + (
                        f" (the cursor {spec.source.cursor} is an id: the request's start_date filter "
                        f"selects)" if dated else ""),
                        since=None if dated else _as_cursor(start, cursor_type), until=until)
    elif opts.full or opts.force:
        window = Window("full", "--force" if opts.force else "--full", until=until)
    else:
        last = history.last_completed(conn, spec.crm, spec.entity) if conn is not None else None
        if last is not None and last.watermark is not None:
            base = parse_watermark(last.watermark, cursor_type)
            since = base - spec.lookback if isinstance(base, dt.datetime) else base
            how = (f"minus lookback {spec.lookback}" if not dated else
                   f"(the cursor {spec.source.cursor} is an id: the records after it, no lookback)")
            window = Window("delta", f"SyncHistory run {last.id} ({last.status}, ended "
                                     f"{iso_text(last.end_time)}): watermark {last.watermark} {how}",
                            since=since, until=until, base_watermark=last.watermark)
        elif last is not None:
            window = Window("initial", f"SyncHistory run {last.id} committed no rows: fetching everything", until=until)
        else:
            window = Window("initial", "no completed SyncHistory run: fetching everything", until=until)
    if dated and spec.source.cursor:
        window.start, window.end = (start if window.mode == "since" else None), end
    window.params = params_config(spec.param_values) or None
    if conn is not None:
        _attach_resume(window, spec, conn, dead_running)
    return window


def check_spec_options(spec: Spec, opts: RunOptions) -> None:
    """--start-date / --end-date with a spec whose cursor is an id, not a time: the dates cannot
    bound the ids, so they need a request that sends them (`start_date` / `end_date`, e.g. an API's
    creation-time filter). Refused before anything is touched when it does not."""
    cursor_type = spec.fields[spec.cursor_field].type if spec.cursor_field else None
    if not spec.source.cursor or cursor_type in TIME_CURSORS:
        return
    from syncrunner.spec.lint import request_variables
    used = request_variables(spec.source.options.get("request"))
    used = used if isinstance(used, set) else set()  # a template that does not compile: lint says so
    for option, value, name in (("--start-date", opts.start_date, "start_date"),
                                ("--end-date", opts.end_date, "end_date")):
        if value is not None and name not in used:
            raise OptionError(f"{spec.path}: {option} cannot select {spec.name}: its cursor "
                              f"{spec.source.cursor} is {_a(cursor_type)}, not a time, and its request does not "
                              f"use {name} (an API filter on creation time); use --full or a delta run")


def decide_readonly(spec: Spec, opts: RunOptions, engine: sa.Engine, exists: bool) -> tuple[Window, str | None]:
    """The window a real run would take now, without writing anything (plan, --dry-run), and a
    note when the latest run is still `running`: dead (a real run marks it failed and resumes it)
    or alive (a real run would find the entity locked)."""
    if not exists:
        return decide(spec, opts, None), None
    from syncrunner.runtime.locks import entity_lock_free
    with engine.connect() as conn:
        if not history.tables_exist(conn):
            return decide(spec, opts, None), None
        latest = history.latest_run(conn, spec.crm, spec.entity)
    note, dead = None, False
    if latest is not None and latest.status == "running":
        dead = entity_lock_free(engine, spec.crm, spec.entity)
        note = (f"SyncHistory run {latest.id} is still marked running but no process holds its lock: "
                f"a run marks it failed first" if dead else
                f"SyncHistory run {latest.id} is running now: a run would exit with code 4 (or --wait)")
    with engine.connect() as conn:
        return decide(spec, opts, conn, dead_running=dead), note


def describe_position(position: dict, limit: int = 240) -> str:
    """A resume position in one short line: long lists (an HTTP source's keys seen at the cursor
    value, thousands of them) are counted, not printed."""
    from syncrunner.core.codec import decode

    def short(v: Any) -> str:
        v = decode(v)
        return v.isoformat() if hasattr(v, "isoformat") else str(v)

    parts = []
    for k, v in position.items():
        if isinstance(v, list) and len(v) > 3:
            text = f"{len(v):,} values ({', '.join(map(short, v[:2]))}, ...)"
        elif isinstance(v, list):
            text = "(" + ", ".join(map(short, v)) + ")"
        else:
            text = short(v)
        parts.append(f"{k}={text}")
    line = ", ".join(parts)
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _attach_resume(window: Window, spec: Spec, conn: sa.Connection, dead_running: bool = False) -> None:
    """Resume the latest run if it failed over the same window. A failed run that committed no
    chunk of its own but had resumed an earlier one (killed before its first chunk) passes that
    checkpoint on: it is still where the data stands."""
    latest = history.latest_run(conn, spec.crm, spec.entity)
    resumable = ("failed", "running") if dead_running else ("failed",)
    if latest is None or latest.status not in resumable:
        return
    source = latest
    if not (latest.checkpoint or {}).get("position"):
        earlier = (latest.configuration or {}).get("resumed_from")
        if (latest.configuration or {}).get("window") != window.as_config() or earlier is None:
            return
        source = history.run_row(conn, earlier)
        if source is None or source.status != "failed":
            return
    cp = source.checkpoint or {}
    if cp.get("window") == window.as_config() and cp.get("position") is not None:
        window.resume_run = source.id
        window.position = cp["position"]
        window.watermark = source.watermark
        via = f" (run {latest.id} resumed it and died before its first chunk)" if source is not latest else ""
        window.reason += f"; resuming failed run {source.id} after its last checkpoint{via}"


def _end_of_day(value: str | None, tz: str) -> dt.datetime | None:
    d = parse_date_option("--end-date", value, tz)
    if d is not None and _DATE.fullmatch(value.strip()):
        d += dt.timedelta(days=1)  # --end-date names the last day included
    return d


def _a(cursor_type: str | None) -> str:
    return f"an {cursor_type}" if (cursor_type or "x")[0] in "aeiou" else f"a {cursor_type}"


def _as_cursor(d: dt.datetime | None, cursor_type: str | None) -> Any:
    if d is None:
        return None
    if cursor_type == "date":
        return d.date()
    return d
