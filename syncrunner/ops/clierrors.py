"""Ordinary failures on the command line (README "Command line"): one line that says what to fix,
the documented exit code, and a traceback only with --debug. SQLAlchemy is imported where used:
`--help` and `lint` never load it."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

import click

from syncrunner.core.errtext import one_line
from syncrunner.core.redact import redact, redact_url

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_LOCKED = 0, 1, 2, 3, 4


def target_option(f: Callable) -> Callable:
    return click.option("--target", "target_url", metavar="URL", default=None,
                        help="Target database URL (default: $SYNCRUNNER_TARGET_URL, else sqlite:///syncrunner.db).")(f)


def debug_option(f: Callable) -> Callable:
    return click.option("--debug", is_flag=True, help="Show the traceback when the command fails.")(f)


def resolve_target(given: str | None) -> str:
    """The target URL: --target, else $SYNCRUNNER_TARGET_URL, else the default. One that cannot
    name a database is a usage error (exit 2), refused before anything is touched."""
    from syncrunner.dburl import url_problem
    from syncrunner.runtime.settings import default_target_url

    url = given or default_target_url()
    problem = url_problem(url)
    if problem:
        where = "--target" if given else "SYNCRUNNER_TARGET_URL"
        raise click.UsageError(f"{where} {redact_url(url)!r} {problem}")
    return url


def target_problem(e: BaseException, url: str) -> str:
    """What went wrong with the target, in one line naming it."""
    import sqlalchemy as sa

    where = redact_url(url)
    if isinstance(e, (sa.exc.OperationalError, sa.exc.InterfaceError)) or \
            getattr(e, "connection_invalidated", False):
        return redact(f"target unreachable ({where}): {one_line(e)}")
    if isinstance(e, PermissionError):
        return redact(f"permission denied on the target ({where}): {e.filename or ''} {e.strerror}".strip())
    return redact(f"target error ({where}): {one_line(e)}")


def ordinary() -> tuple[type[BaseException], ...]:
    """The failures a command reports as one line: the target database refusing or unreachable,
    a file or lock this user may not open."""
    import sqlalchemy as sa

    from syncrunner.runtime.locks import LockUnavailable

    return sa.exc.DBAPIError, LockUnavailable, OSError


@contextmanager
def reported(debug: bool, target: str | None = None, prefix: str = "error") -> Iterator[None]:
    """Turn an ordinary failure inside the block into `prefix: what went wrong` on stderr and
    exit 1; with --debug it propagates (traceback)."""
    try:
        yield
    except ordinary() as e:
        if debug:
            raise
        text = target_problem(e, target) if target is not None else redact(one_line(e))
        click.echo(f"{prefix}: {text}", err=True)
        sys.exit(EXIT_FAILED)
