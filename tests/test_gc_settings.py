"""runtime/bulkgc.py: the `syncrunner` process and its mapping workers collect rarely and freeze
their start-up objects; a program that imports syncrunner keeps its own collector settings."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

from syncrunner.runtime.bulkgc import YOUNG_THRESHOLD
from syncrunner.runtime.mapworkers import MapPool
from syncrunner.spec import load_spec

from .helpers import make_source, sync, table_rows, write_spec

# The real console entry point, with an atexit handler (it runs before the quick exit) that
# reports the collector's state at the end of the command.
SCRIPT = """
import atexit, gc, json, sys
atexit.register(lambda: print("GC " + json.dumps([gc.isenabled(), gc.get_threshold(), gc.get_freeze_count()])))
sys.argv = ["syncrunner", *sys.argv[1:]]
from syncrunner.cli import entry
entry()
"""


def _cli_gc(spec: Path, source_url: str, target_url: str, **env: str) -> list:
    p = subprocess.run([sys.executable, "-c", SCRIPT, "run", str(spec), "--target", target_url],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "ITEM_DB_URL": source_url, **env})
    assert p.returncode == 0, p.stderr
    line, = [x for x in p.stdout.splitlines() if x.startswith("GC ")]
    return json.loads(line[3:])


def test_the_cli_collects_rarely_and_freezes_its_start_up(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    make_source(source, 300)
    spec = write_spec(tmp_path, chunk_size=100)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    enabled, threshold, frozen = _cli_gc(spec, source, target)
    assert enabled and threshold[0] == YOUNG_THRESHOLD
    assert frozen > 20_000  # the imports (SQLAlchemy, click, the runtime) and the loaded spec
    assert len(table_rows(target, "items")) == 300  # and the run itself did its work

    enabled, threshold, frozen = _cli_gc(spec, source, f"sqlite:///{tmp_path / 'other.db'}", SYNCRUNNER_GC="0")
    assert enabled and list(threshold) == [700, 10, 10] and frozen == 0  # CPython's defaults


def test_a_program_that_runs_a_sync_keeps_its_own_collector(tmp_path):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    make_source(source, 50)
    before = gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()
    result = sync(write_spec(tmp_path), source, f"sqlite:///{tmp_path / 'target.db'}", map_workers=0)
    assert result.ok and result.stats.created == 50
    assert (gc.get_threshold(), gc.get_freeze_count(), gc.isenabled()) == before


def test_a_mapping_worker_collects_rarely_and_freezes_its_set_up(tmp_path, monkeypatch):
    monkeypatch.setenv("ITEM_DB_URL", "sqlite://")
    spec = load_spec(write_spec(tmp_path))
    pool = MapPool(spec, workers=1, skip_validation=False, batch_size=500, run_id=1, want_keys=False)
    try:
        pool.wait_ready()
        enabled, threshold, frozen = pool.gc_state()
    finally:
        pool.close()
    assert enabled and threshold[0] == YOUNG_THRESHOLD and frozen > 5_000
