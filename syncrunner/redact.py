"""Secret redaction: values that came from secret-looking environment variables, and URL passwords,
never reach logs, SyncHistory.configuration or error messages."""
from __future__ import annotations

import logging
import re
import threading

_SECRET_NAME = re.compile(r"(TOKEN|KEY|SECRET|PASS|PWD|AUTH|CREDENTIAL)", re.I)
_URL_NAME = re.compile(r"(_URL|_DSN|_URI)$", re.I)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", re.I)
_MIN_SECRET_LEN = 4
_lock = threading.Lock()
_secrets: set[str] = set()


def is_secret_name(var_name: str) -> bool:
    """Environment variables whose names look like credentials are treated as secrets."""
    return bool(_SECRET_NAME.search(var_name))


def is_url_name(var_name: str) -> bool:
    """URL variables (GENIUS_DB_URL, HUBSPOT_BASE_URL): only their password part is secret."""
    return bool(_URL_NAME.search(var_name))


def register_secret(value: str | None) -> None:
    """Remember a secret value (and any password inside it) so redact() hides it everywhere."""
    if not value or not isinstance(value, str):
        return
    with _lock:
        if len(value) >= _MIN_SECRET_LEN:
            _secrets.add(value)
        for m in _URL_PASSWORD.finditer(value):
            if len(m.group("pw")) >= 1:
                _secrets.add(m.group("pw"))


def register_url_password(url: str) -> None:
    """Remember only the password part of a database or API URL."""
    for m in _URL_PASSWORD.finditer(url or ""):
        with _lock:
            _secrets.add(m.group("pw"))


def redact(text: object) -> str:
    """Return text with URL passwords and every registered secret replaced by ***."""
    s = str(text)
    s = _URL_PASSWORD.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", s)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in s:
            s = s.replace(secret, "***")
    return s


def redact_url(url: str) -> str:
    return _URL_PASSWORD.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", url)


class RedactingFilter(logging.Filter):
    """Logging filter that redacts the final message (args included) of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed log call must not hide the record
            msg = str(record.msg)
        record.msg = redact(msg)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
