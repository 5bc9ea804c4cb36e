"""Remember which specs passed the JSON Schema, so a run of an unchanged spec skips the check.

Checking a spec against schemas/spec.schema.json means importing jsonschema (with referencing,
attrs and the bundled metaschemas) and building a validator: 0.05-0.07 s of CPU on the bench VM,
paid by every `syncrunner run`, a tenth of a small cron run's own time. The answer depends only
on the schema and the spec's data after ${VAR} interpolation, so `syncrunner run` looks the pair
up here first. Only a pass is kept (a spec with problems is checked, and reported, every time);
`syncrunner lint` and the other commands always check.

An entry is an empty file named by an HMAC-SHA256 of the schema's bytes and the data (canonical
JSON), under a random key made on first use (mode 0600): the interpolated data holds secrets, and
a plain hash of it on disk would let anyone who reads the cache test guesses at a password. No
value, secret or not, is written. The folder is $SYNCRUNNER_CACHE_DIR, else
$XDG_CACHE_HOME/syncrunner, else ~/.cache/syncrunner; SYNCRUNNER_SPEC_CACHE=0 turns it off. A
cache that cannot be read or written is skipped without a word: the spec is then checked."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

KEEP = 512  # entries kept; beyond that the oldest go (each edit of a spec makes a new one)


def enabled() -> bool:
    return os.environ.get("SYNCRUNNER_SPEC_CACHE", "").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    if os.environ.get("SYNCRUNNER_CACHE_DIR"):
        return Path(os.environ["SYNCRUNNER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "syncrunner"


def _key(folder: Path) -> bytes:
    """The folder's HMAC key, made on first use; readable by its owner only."""
    path = folder / "key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another run made it first
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    return path.read_bytes()


def _entry(folder: Path, schema: bytes, data: Any) -> Path:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    digest = hmac.new(_key(folder), schema + b"\0" + text, hashlib.sha256).hexdigest()
    return folder / "passed" / digest


def passed(schema: bytes, data: Any) -> bool:
    """True if this schema already passed this data."""
    if not enabled():
        return False
    try:
        entry = _entry(cache_dir(), schema, data)
        if not entry.exists():
            return False
        entry.touch()  # recently used: kept when the oldest are pruned
        return True
    except (OSError, TypeError, ValueError):
        return False


def remember(schema: bytes, data: Any) -> None:
    """Record that this schema passes this data (best effort)."""
    if not enabled():
        return
    try:
        entry = _entry(cache_dir(), schema, data)
        entry.parent.mkdir(exist_ok=True, mode=0o700)
        entry.touch()
        _prune(entry.parent)
    except (OSError, TypeError, ValueError):
        pass


def _prune(folder: Path) -> None:
    entries = list(folder.iterdir())
    if len(entries) <= KEEP:
        return
    entries.sort(key=lambda p: p.stat().st_mtime)
    for old in entries[:len(entries) - KEEP]:
        old.unlink(missing_ok=True)
