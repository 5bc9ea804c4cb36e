"""Logging: plain lines on stderr, every message redacted."""
from __future__ import annotations

import logging
import sys

from .redact import RedactingFilter


def setup_logging(debug: bool = False) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_syncrunner", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._syncrunner = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("sqlalchemy", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
