"""Secret redaction: no secret leaves the process or lands in a table, in any encoding.

redact() runs on every log line (RedactingFilter, on the handler), everything the CLI prints
(RedactingStream), every error message and every value written to SyncHistory or the dead-letter
table (their column types, targets/sqltypes.py). It hides secrets two ways:

* by value: a secret is registered once, when it is read (a ${VAR} with a credential-like name or
  under `source.auth`, a URL's password, every auth value), together with the forms it takes on the
  wire and in an API's error body: percent-encoded (quote and quote_plus, hex in either case),
  base64 (standard and urlsafe, padded or not, and any stretch of a longer base64 text, so the
  `user:password` of basic auth too) and JSON- or repr-escaped (`\\/`, `\\u00e9`, `\\"`). Every form
  of every secret is in one regex (a prefix tree), compiled at the first use after a register.
* by position: whatever stands in a URL's password, in an auth query parameter (`api_key=...`) or
  in an auth header (`Authorization: ...`, `"X-Auth-Token": "..."`), registered or not."""
from __future__ import annotations

import base64
import json
import logging
import re
import threading
from typing import Any
from urllib.parse import quote, quote_plus, unquote

_SECRET_NAME = re.compile(r"(TOKEN|KEY|SECRET|PASS|PWD|AUTH|CREDENTIAL)", re.I)
_URL_NAME = re.compile(r"(_URL|_DSN|_URI)$", re.I)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", re.I)
_MIN_SECRET_LEN = 4
_MIN_FORM_LEN = 6  # a shorter stretch of base64 could match unrelated text
# header and parameter names whose value is a credential wherever it appears
AUTH_NAMES = frozenset({
    "authorization", "proxy-authorization", "x-auth-token", "x-auth-key", "x-api-key", "api-key",
    "apikey", "api_key", "x-access-token", "access_token", "auth_token", "token", "client_secret",
    "password", "passwd", "hapikey", "cookie", "set-cookie", "apiKey", "accessToken", "authToken",
    "clientSecret"})
_SCHEME = r"(?:(?:Bearer|Basic|Token|Digest|OAuth|bearer|basic|token)\s+)?"
_HEX = re.compile(r"(?<=%)[0-9A-Fa-f]{2}|(?<=\\u)[0-9A-Fa-f]{4}")  # the hex digits of an escape

_lock = threading.Lock()
_forms: dict[str, set[str]] = {}  # secret -> the texts it can appear as
_names: set[str] = set(AUTH_NAMES)
_by_value: re.Pattern | None = None
_stale = False


def _positional(names: set[str]) -> tuple[re.Pattern, re.Pattern]:
    """A quick test (any credential name, any URL) and one regex for every position a credential
    takes, whose group named v* is the value to hide. Both are case-sensitive, with each name in
    its usual cases: sre then jumps to the possible first characters (re.I would try every one)."""
    n = _trie(sorted({c for x in names for c in (x, x.lower(), x.upper(), x.title(), x.capitalize())}))
    url = r"[A-Za-z][A-Za-z0-9+.\-]*:(?:\\?/){2}"
    quick = re.compile(rf"{n}|:(?:\\?/){{2}}")
    quoted = r"(?:=\\?\"[^\"\s\\]*\\?\")?"  # token="..." (or token=\"...\" inside JSON)
    full = re.compile(
        rf"(?P<q>[\"'])(?:{n})(?P=q)\s*[:,]\s*(?P<r>[\"']){_SCHEME}"              # "name": "value"
        rf"(?P<v1>(?:\\.|(?!(?P=r))[^\\\r\n])+)"
        rf"|(?<![\w.-])(?:{n})[ \t]*:[ \t]*{_SCHEME}"                             # Name: value (a header)
        rf"(?P<v2>(?:[^\s\"'\\,;}}\]=]+{quoted}|=|;[ \t]*)+)"
        rf"|(?:(?<=%26)|(?<=%3[Ff])|(?<![\w.-]))(?:{n})(?:=|%3[Dd])"                # name=value
        rf"(?P<v3>\\?\"[^\"\s\\]*\\?\"|(?:(?!%26)[^\s&#\"'<>\\,;)])+)"
        rf"|{url}[^:/@\s\"'\\]*:(?P<v4>[^@/\s\"'\\]+)@")                        # scheme://user:pw@
    return quick, full


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
    found = [value] if len(value) >= _MIN_SECRET_LEN else []
    for m in _URL_PASSWORD.finditer(value):
        found += [m.group("pw"), unquote(m.group("pw"))]
    _add(found)


def register_url_password(url: str) -> None:
    """Remember only the password part of a database or API URL (as written and decoded)."""
    _add([p for m in _URL_PASSWORD.finditer(url or "") for p in (m.group("pw"), unquote(m.group("pw")))])


def register_basic_auth(user: str, password: str) -> None:
    """The password, and `user:password`, whose base64 is what an Authorization: Basic header holds."""
    _add([password, f"{user}:{password}"] if password else [])


def register_auth_name(name: str | None) -> None:
    """A header or query parameter that carries a credential: its value is hidden by position too."""
    global _quick, _by_position
    if name and name not in _names:
        with _lock:
            _names.add(name)
            _quick, _by_position = _positional(_names)


def _add(values: list[str]) -> None:
    global _stale
    with _lock:
        for v in values:
            if v and v not in _forms:
                _forms[v] = {f for f in forms_of(v) if len(f) >= min(len(v), _MIN_FORM_LEN)}
                _stale = True


def _value_pattern() -> re.Pattern | None:
    """Every form of every secret as one regex, compiled again at the first use after a register."""
    global _by_value, _stale
    if _stale:
        with _lock:
            _by_value = re.compile(_trie(sorted(set().union(*_forms.values()))))
            _stale = False
    return _by_value


def forms_of(secret: str) -> set[str]:
    """The texts `secret` can appear as. Each layer adds to the one before: written into JSON or a
    repr; base64-encoded (basic auth, opaque tokens); sent in a URL; echoed in a JSON body. Escapes
    come with their hex in both cases."""
    texts = _escaped(secret)
    texts |= {b for t in texts for b in _base64(t)}
    texts |= {p for t in texts for p in _percent(t)}
    texts |= {e for t in texts for e in _escaped(t)}
    return texts | {_HEX.sub(lambda m: case(m.group()), t)
                    for t in texts if _HEX.search(t) for case in (str.lower, str.upper)}


def _escaped(text: str) -> set[str]:
    """JSON-escaped (ASCII or not; `/` as `\\/` or not, as PHP writes it) and repr-escaped."""
    once = {text, json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1], repr(text)[1:-1]}
    return once | {t.replace("/", "\\/") for t in once}


def _base64(text: str) -> set[str]:
    """Standard and urlsafe, padded or not, and the characters that depend only on `text` for each
    of the 3 byte offsets it can have inside a longer base64 text (`user:password`, a token); of
    its UTF-8 and, where that differs, its Latin-1 bytes (what requests sends for basic auth)."""
    out, encodings = set(), {text.encode("utf-8")}
    if max(text, default="a") <= "\xff":
        encodings.add(text.encode("latin-1"))
    for data in encodings:
        full = base64.b64encode(data).decode()
        out |= {full, full.rstrip("=")}
        for k in range(3):
            coded = base64.b64encode(b"\0" * k + data).decode()
            out.add(coded[-(-8 * k // 6):8 * (k + len(data)) // 6])
    return out | {t.replace("+", "-").replace("/", "_") for t in out}


def _percent(text: str) -> set[str]:
    """quote and quote_plus as Python and JavaScript encoders write them, a `+` read back as a space,
    and a URL encoded inside another URL."""
    out = {quote(text, safe=""), quote(text), quote_plus(text), quote(text, safe="!~*'()"), text.replace("+", " ")}
    return out | {quote(t, safe="") for t in out if "%" in t}


def _trie(words: list[str]) -> str:
    """A regex matching any of `words`, longest first, as a prefix tree: sre scans for the set of
    first characters and follows one branch, instead of trying every word at every position."""
    tree: dict = {}
    for w in words:
        node = tree
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        end = "" in node
        branches = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if end else body
    return emit(tree)


_quick, _by_position = _positional(_names)


def _mask(m: re.Match) -> str:
    for g in ("v1", "v2", "v3", "v4"):
        if m.group(g) is not None:
            s, e = m.span(g)
            text, at = m.group(0), m.start()
            return text[:s - at] + "***" + text[e - at:]
    return m.group(0)


def redact(text: object) -> str:
    """Return text with every registered secret (in any form) and every credential by position
    replaced by ***. Secrets first: a value hidden by position may hold a registered one."""
    s = str(text)
    pattern = _value_pattern()
    if pattern is not None:
        s = pattern.sub("***", s)
    return _by_position.sub(_mask, s) if _quick.search(s) else s


def redact_value(value: Any) -> Any:
    """redact() through JSON-like data (dicts, lists, strings): a credential-named key's string is
    hidden whole."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: "***" if isinstance(v, str) and str(k).lower() in _names else redact_value(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


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


class RedactingStream:
    """A text stream whose every write is redacted: the CLI's stdout and stderr, so text that
    reaches the terminal without a logger (click messages, tracebacks, warnings) is covered too."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text) if text else text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_streams() -> None:
    """Route sys.stdout and sys.stderr through redact() (once)."""
    import sys
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))
