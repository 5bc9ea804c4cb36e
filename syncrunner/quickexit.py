"""Leaving the `syncrunner` process without the interpreter's teardown.

With SQLAlchemy, both dialects and their drivers loaded, CPython's finalization (clearing every
module and freeing every object one by one) took 0.21-0.31 s on the bench VM after the work was
done: a fifth of a small delta run, paid by every cron run. What exit must still do is done
here first: the atexit handlers run (engines dispose their connections, logging flushes and
closes its handlers, weakref finalizers remove temporary files) and stdout and stderr are
flushed; then the process ends with os._exit. Only when the main thread is the only thread:
anything still running gets the ordinary exit. SYNCRUNNER_FAST_EXIT=0 turns it off."""
from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Any, NoReturn


def enabled() -> bool:
    return os.environ.get("SYNCRUNNER_FAST_EXIT", "").strip().lower() not in ("0", "false", "no", "off")


def leave(code: Any) -> NoReturn:
    """End the process with `code` (a SystemExit code: None, an int or a message)."""
    if not isinstance(code, int) and code is not None:
        sys.exit(code)  # a message: printed the usual way, exit status 1
    if not enabled() or threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()  # noqa: SLF001 - the handlers an ordinary exit runs, in the same order
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code or 0)


def run(command: Any) -> NoReturn:
    """Run a click command as a console script does, then leave."""
    try:
        command.main()
    except SystemExit as e:
        leave(e.code)
    leave(0)
