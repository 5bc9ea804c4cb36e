"""The spec cache (syncrunner/speccache.py): a run of an unchanged spec skips the JSON Schema
check, and nothing else changes: a spec with problems is reported every time, a changed spec or
value is checked again, and no value (secret or not) reaches the cache folder."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from syncrunner import speccache
from syncrunner.spec import SpecError, load_spec, schema_path
from tests.helpers import write_spec

SECRET = "mysql+pymysql://root:s3cret-Pa55word@127.0.0.1:3306/items"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("SYNCRUNNER_CACHE_DIR", str(folder))
    monkeypatch.delenv("SYNCRUNNER_SPEC_CACHE", raising=False)
    return folder


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "passed").iterdir()) if (cache / "passed").exists() else []


def _load_in_fresh_process(spec: Path, env: dict) -> str:
    """Load the spec in a new interpreter; prints whether jsonschema was imported."""
    code = ("import sys; from syncrunner.spec import load_spec; load_spec(sys.argv[1]); "
            "print('jsonschema' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(spec)], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_an_unchanged_spec_is_checked_once_and_no_value_reaches_the_cache(tmp_path, cache):
    spec = write_spec(tmp_path)
    env = dict(os.environ, ITEM_DB_URL=SECRET)
    assert _load_in_fresh_process(spec, env) == "True"    # checked: the schema's validator was loaded
    assert _load_in_fresh_process(spec, env) == "False"   # the pass was remembered
    assert len(_entries(cache)) == 1
    for path in cache.rglob("*"):
        if path.is_file():
            assert b"s3cret" not in path.read_bytes() and "s3cret" not in path.name
    assert stat.S_IMODE((cache / "key").stat().st_mode) == 0o600  # the HMAC key: its owner's only
    assert stat.S_IMODE(cache.stat().st_mode) & 0o077 == 0


def test_a_changed_value_or_spec_is_checked_again(tmp_path, cache):
    spec = write_spec(tmp_path)
    load_spec(spec, {"ITEM_DB_URL": SECRET})
    load_spec(spec, {"ITEM_DB_URL": SECRET.replace("s3cret", "other")})
    assert len(_entries(cache)) == 2
    write_spec(tmp_path, chunk_size=7)
    assert load_spec(spec, {"ITEM_DB_URL": SECRET}).source.chunk_size == 7
    assert len(_entries(cache)) == 3


def test_a_spec_with_problems_is_never_remembered_and_is_reported_every_time(tmp_path, cache):
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("chunk_size: 1000", "chunk_size: lots"))
    for _ in range(2):
        with pytest.raises(SpecError) as e:
            load_spec(spec, {"ITEM_DB_URL": SECRET})
        assert f"{spec}:" in str(e.value) and "chunk_size" in str(e.value)
    assert _entries(cache) == []


def test_a_pass_holds_for_its_schema_only(cache):
    data = {"crm": "x"}
    speccache.remember(schema_path().read_bytes(), data)
    assert speccache.passed(schema_path().read_bytes(), data)
    assert not speccache.passed(schema_path().read_bytes() + b" ", data)
    assert not speccache.passed(schema_path().read_bytes(), {"crm": "y"})


def test_the_cache_can_be_off_or_unwritable_and_specs_still_load(tmp_path, cache, monkeypatch):
    spec = write_spec(tmp_path)
    monkeypatch.setenv("SYNCRUNNER_SPEC_CACHE", "0")
    load_spec(spec, {"ITEM_DB_URL": SECRET})
    assert not cache.exists()
    monkeypatch.delenv("SYNCRUNNER_SPEC_CACHE")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SYNCRUNNER_CACHE_DIR", str(blocker / "cache"))  # a folder under a file
    assert load_spec(spec, {"ITEM_DB_URL": SECRET}).entity == "items"


def test_the_oldest_entries_go_beyond_the_limit(cache, monkeypatch):
    monkeypatch.setattr(speccache, "KEEP", 3)
    schema = schema_path().read_bytes()
    for n in range(5):
        speccache.remember(schema, {"n": n})
    assert len(_entries(cache)) == 3
    assert speccache.passed(schema, {"n": 4})  # the one just made is kept
