"""Logging: one line per message on stderr, every message redacted.

`text` is for people and cron mail; `json` is one object per line for log shippers. With `--debug`
the SQL sent to every database and the URL of every HTTP request are logged too: the redacting
filter sits on the handler, so passwords and tokens in them never reach the output."""
from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import IO

from syncrunner.core.redact import RedactingFilter, redact, redact_url

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(message)s"
MAX_SQL_CHARS = 4000
sql_log = logging.getLogger("syncrunner.sql")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC, ISO 8601), level, logger, message (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False, default=str)


class _TqdmAwareHandler(logging.StreamHandler):
    """Writes through tqdm.write so a message printed while a progress bar is live appears above
    the bar instead of breaking it; with no bar it is a plain write. A bar exists only once
    progress.py has imported tqdm, so a run with no terminal never imports it (~35 ms)."""

    def emit(self, record: logging.LogRecord) -> None:
        bars = sys.modules.get("tqdm")
        if bars is None:
            return super().emit(record)
        try:
            bars.tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise into the run
            self.handleError(record)


def setup_logging(debug: bool = False, fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Install syncrunner's handler on the root logger (replacing a previous one)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_syncrunner", False):
            root.removeHandler(h)
    handler = _TqdmAwareHandler(stream or sys.stderr)
    handler._syncrunner = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter(TEXT_FORMAT, "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    # urllib3 logs each request line ("GET /path?query HTTP/1.1" 200) at DEBUG: the request URLs
    logging.getLogger("urllib3").setLevel(logging.DEBUG if debug else logging.WARNING)
    _log_sql(debug)


def _before_cursor_execute(conn, cursor, statement, parameters, context, executemany) -> None:
    if not sql_log.isEnabledFor(logging.DEBUG):
        return
    where = redact_url(conn.engine.url.render_as_string(hide_password=True))
    text = " ".join(str(statement).split())
    if len(text) > MAX_SQL_CHARS:
        text = text[:MAX_SQL_CHARS] + f"... ({len(text):,} chars)"
    if executemany and isinstance(parameters, (list, tuple)):
        params = f"{len(parameters):,} parameter sets, first {_short(parameters[0] if parameters else None)}"
    else:
        params = _short(parameters)
    if parameters:
        sql_log.debug("SQL on %s: %s | params %s", where, text, redact(params))
    else:
        sql_log.debug("SQL on %s: %s", where, text)


def _short(value: object, limit: int = 500) -> str:
    s = repr(value)
    return s if len(s) <= limit else s[:limit] + "..."


def _log_sql(on: bool) -> None:
    """Log every statement (source queries with their binds, target upserts) when debugging."""
    if not on and "sqlalchemy" not in sys.modules:
        return  # nothing listens yet, and commands that never touch a database need not load it
    import sqlalchemy as sa
    from sqlalchemy import event

    listening = event.contains(sa.engine.Engine, "before_cursor_execute", _before_cursor_execute)
    if on and not listening:
        event.listen(sa.engine.Engine, "before_cursor_execute", _before_cursor_execute)
    elif not on and listening:
        event.remove(sa.engine.Engine, "before_cursor_execute", _before_cursor_execute)
