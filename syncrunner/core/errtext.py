"""An exception as one line of text, for logs, summaries and SyncHistory.error_message: an
ordinary failure (a server down, a password refused) is one line that says what went wrong, not a
multi-line driver dump. With --debug the SQL is logged anyway."""
from __future__ import annotations

# what SQLAlchemy appends to a driver's message: the statement (maybe many lines), its
# parameters, a link
_TRAILERS = ("\n[SQL:", "\n[parameters:", "\n(Background on this error at:")


def one_line(e: BaseException) -> str:
    """`Type: message`, the message's lines joined with spaces, SQLAlchemy's trailers dropped."""
    text = str(e)
    cut = min((i for i in (text.find(t) for t in _TRAILERS) if i >= 0), default=len(text))
    text = " ".join(line.strip() for line in text[:cut].splitlines() if line.strip())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
