"""Mapping worker processes (runtime/parallel.py) and the straight first load (Writer.direct):
a run whose chunks are mapped by workers writes exactly what a run mapping in its own process
writes, and no failure of a worker loses or duplicates a row. Real MariaDB source, real
PostgreSQL target, real worker processes."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncrunner.dburl import create_engine
from tests.helpers import (BASE_TS, cli, cli_env, cli_start, item, make_source, rows, sync,
                           write_spec)
from tests.test_deletes import SOFT, _delete_upstream, _deleted


class Chunks:
    """Observer: the run's stats after each committed chunk; `act(n)` runs after chunk n."""

    def __init__(self, act=None):
        self.seen: list[tuple[int, dict]] = []
        self.act = act

    def started(self, spec, window, total):
        pass

    def chunk_done(self, spec, chunk_no, stats):
        self.seen.append((chunk_no, stats.as_dict()))
        if self.act:
            self.act(chunk_no)

    def finished(self, result):
        pass


def _metrics(url, entity) -> dict:
    m = rows(url, "SELECT performance_metrics FROM sync_history WHERE sync_type = :e ORDER BY id DESC LIMIT 1",
             e=entity)[0][0]
    return json.loads(m) if isinstance(m, str) else m


def _table(url, table) -> list[tuple]:
    """Fingerprints are salted with the spec's digest (these specs differ by table): the no-change
    run skipping every row is what shows a worker's fingerprints equal this process's."""
    return [tuple(r) for r in rows(url, f"SELECT id, name, email, amount, seen_on, updated_at "
                                        f"FROM {table} ORDER BY id")]


def _dead(url, entity) -> list[tuple]:
    """The entity's dead letters, with its table name and the (spec-salted) fingerprint taken out."""
    out = []
    for key, field, action, reason, raw in rows(url, "SELECT record_key, field, action, reason, raw_record "
                                                     "FROM sync_dead_letters WHERE sync_type = :e", e=entity):
        record = json.loads(raw)
        record.pop("_sr_fingerprint", None)
        out.append((key, field, action, reason.replace(entity, "TABLE"), record))
    return sorted(out, key=repr)


def test_workers_write_exactly_what_the_run_process_writes(tmp_path, mysql_url, pg_url):
    src = make_source(mysql_url, 6000)
    with src.begin() as c:  # records the mapping rejects
        c.execute(item.update().where(item.c.id == 3).values(email="not-an-email"))
        c.execute(item.update().where(item.c.id == 4).values(name=None))
        c.execute(item.update().where(item.c.id == 2500).values(seen_on="0000-00-00"))
    engine = create_engine(pg_url)
    results = {}
    for workers in (0, 2):
        table = f"items_w{workers}"
        with engine.begin() as c:  # rows the database refuses: a straight load, then a bulk merge fail
            c.execute(sa.text(f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, name VARCHAR NOT NULL, "
                              "email VARCHAR, amount NUMERIC(12,2), seen_on DATE, updated_at TIMESTAMPTZ NOT NULL, "
                              "_sr_fingerprint BIGINT, CHECK (id <> 4500 AND id <> 5999))"))
        spec = write_spec(tmp_path, chunk_size=1000, batch_size=400, name=f"{table}.yaml", entity=table, table=table)
        first, again = Chunks(), Chunks()
        # map_after=0: every chunk to the workers
        r1 = sync(spec, mysql_url, pg_url, map_workers=workers, map_after=0, observers=[first])
        m1 = _metrics(pg_url, table)
        r2 = sync(spec, mysql_url, pg_url, map_workers=workers, map_after=0, observers=[again], full=True)
        m2 = _metrics(pg_url, table)
        results[workers] = dict(stats=(r1.stats, r2.stats), status=(r1.status, r2.status),
                                watermark=(r1.watermark, r2.watermark), chunks=(first.seen, again.seen),
                                table=_table(pg_url, table), dead=_dead(pg_url, table),
                                by_workers=(m1["chunks_mapped_by_workers"], m2["chunks_mapped_by_workers"]))
    engine.dispose()
    here, pooled = results[0], results[2]
    assert here["by_workers"] == (0, 0)
    # the first run: every chunk; the no-change run: the 4 chunks holding a row that is not skipped
    # (the 5 refused ones have no stored fingerprint); a chunk with nothing to map stays here
    assert pooled["by_workers"] == (6, 4)
    assert here["status"] == pooled["status"] == ("partial", "success")
    s1, s2 = pooled["stats"]
    assert (s1.fetched, s1.created, s1.failed) == (6000, 5995, 5)
    assert (s2.unchanged, s2.skipped, s2.failed, s2.known_bad) == (5995, 5995, 0, 5)
    for key in ("stats", "watermark", "chunks", "table", "dead"):
        assert pooled[key] == here[key], key
    assert {d[0] for d in pooled["dead"]} == {"3", "4", "2500", "4500", "5999"}


def _workers(pid: int) -> list[int]:
    """The mapping worker processes among `pid`'s children."""
    return [p for p in _children(pid) if b"syncrunner.runtime.parallel_worker" in _cmdline(p)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_killed_worker_costs_no_row(tmp_path, mysql_url, pg_url):
    make_source(mysql_url, 20000)
    killed: list[int] = []

    def kill_workers(chunk_no):
        if chunk_no == 5:
            killed.extend(_workers(os.getpid()))
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
    result = sync(write_spec(tmp_path, chunk_size=500), mysql_url, pg_url, map_workers=2, map_after=0,
                  observers=[Chunks(kill_workers)])
    assert len(killed) == 2
    assert result.status == "success"
    assert (result.stats.fetched, result.stats.created) == (20000, 20000)
    assert rows(pg_url, "SELECT COUNT(*), COUNT(DISTINCT id), MIN(id), MAX(id) FROM items")[0] == (20000, 20000, 1, 20000)
    m = _metrics(pg_url, "items")
    # killed while mapping, or (on a loaded machine) while the slower one was still starting
    assert m["map_workers_stopped"].startswith(("a mapping worker process died",
                                                "a mapping worker process could not start"))
    assert 4 <= m["chunks_mapped_by_workers"] < 40


def _children(pid: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_a_run_killed_outright_leaves_no_worker_behind_and_the_next_run_catches_up(
        tmp_path, mysql_url, pg_url):
    n = 60000
    make_source(mysql_url, n)
    spec = write_spec(tmp_path, chunk_size=500)
    env = cli_env(mysql_url, pg_url, SYNCRUNNER_MAP_WORKERS="2")  # a counted first load: the pool starts at once
    proc = cli_start("run", spec, env=env)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2:
        workers = _workers(proc.pid)
        time.sleep(0.05)
    assert len(workers) == 2, "the run did not start its workers"
    proc.kill()
    proc.communicate(timeout=30)  # returns only once no process holds its output open
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in workers):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{p}").exists() for p in workers)
    nxt = cli("run", spec, env=env)
    assert nxt.returncode == 0, nxt.stdout + nxt.stderr
    assert rows(pg_url, "SELECT COUNT(*), COUNT(DISTINCT id) FROM items")[0] == (n, n)


def test_a_delete_sweep_sees_the_keys_of_chunks_mapped_by_workers(tmp_path, mysql_url, pg_url):
    src = make_source(mysql_url, 3000)
    spec = write_spec(tmp_path, chunk_size=500, extra=SOFT)
    sync(spec, mysql_url, pg_url, map_workers=2, map_after=0)
    _delete_upstream(src, range(100, 110))
    with src.begin() as c:  # changed rows are mapped (by the workers), unchanged ones skipped
        c.execute(item.update().where(item.c.id > 2000).values(name="changed"))
    result = sync(spec, mysql_url, pg_url, map_workers=2, map_after=0, full=True)
    assert result.status == "success"
    assert (result.stats.updated, result.stats.skipped) == (1000, 1990)
    assert _deleted(pg_url) == list(range(100, 110))
    # the 3 chunks holding changed rows (ids 2001-3000); the others had nothing to map
    assert _metrics(pg_url, "items")["chunks_mapped_by_workers"] == 3


def test_a_first_load_goes_straight_in_until_a_key_comes_twice(tmp_path, mysql_url, pg_url, caplog):
    src = make_source(mysql_url, 2000)

    def move_a_written_row(chunk_no):
        if chunk_no == 1:  # row 10 is stored; its new version comes again later in this run
            with src.begin() as c:
                c.execute(item.update().where(item.c.id == 10).values(
                    name="moved", updated_at=BASE_TS + __import__("datetime").timedelta(days=30)))
    with caplog.at_level("INFO", logger="syncrunner.writer"):
        result = sync(write_spec(tmp_path, chunk_size=500, batch_size=500), mysql_url, pg_url,
                      map_workers=0, observers=[Chunks(move_a_written_row)])
    assert result.status == "success"
    assert (result.stats.fetched, result.stats.created, result.stats.updated) == (2001, 2000, 1)
    assert rows(pg_url, "SELECT name FROM items WHERE id = 10")[0][0] == "moved"
    assert rows(pg_url, "SELECT COUNT(*), COUNT(DISTINCT id) FROM items")[0] == (2000, 2000)
    assert "merging through the staging table from here on" in caplog.text


def test_a_mapping_worker_maps_a_chunk_without_the_runs_secrets(tmp_path, monkeypatch):
    """A worker maps a chunk as the run would (its rules included), with neither the source URL
    nor secret-looking variables in its environment; it imports the run's own syncrunner, not
    one in the working directory."""
    import datetime as dt
    from decimal import Decimal

    from syncrunner.core.records import Chunk
    from syncrunner.runtime.parallel import MapPool
    from syncrunner.spec.load import load_spec

    rule = '\nvalidate:\n  - {rule: "name is not none and id > 1", message: "no name or the first"}\n'
    spec = load_spec(write_spec(tmp_path, extra=rule), {"ITEM_DB_URL": "mysql+pymysql://u@127.0.0.1/db"})
    names = ("id", "name", "email", "amount", "seen_on", "updated_at")
    chunk = Chunk([dict(zip(names, (1, "Ann", "ann@example.com", Decimal("1.50"), "2024-01-02",
                                    dt.datetime(2024, 1, 2, 3, 4, 5)))),
                   dict(zip(names, (2, "Bob\ttab", None, None, None, dt.datetime(2024, 1, 3))))], {})
    monkeypatch.setenv("ITEM_DB_URL", "mysql+pymysql://u:hunter2pw@127.0.0.1/db")
    monkeypatch.setenv("SR_TEST_API_TOKEN", "tok-123456")
    decoy = tmp_path / "elsewhere" / "syncrunner"  # another checkout in the working directory
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('a worker imported the working directory')\n")
    monkeypatch.chdir(decoy.parent)
    pool = MapPool(spec, workers=1, skip_validation=False, batch_size=500, run_id=1, want_keys=True)
    try:
        pool.wait_ready()
        environ = Path(f"/proc/{pool.pids[0]}/environ").read_bytes()
        pool.submit("item", chunk, frozenset(), None, fingerprint=True)
        item_back, mc = pool.take(lambda item: pytest.fail("the worker did not map the chunk"))
    finally:
        pool.close()
    assert item_back == "item" and mc.keys == [(2,)]  # the rule, run from its plan, refused record 1
    assert [(d["record_key"], d["reason"]) for d in mc.dead] == [("1", "no name or the first")]
    (text, count), = mc.encoded.texts
    lines = text.splitlines()
    assert count == 1 and lines[0].startswith("2\tBob\\ttab\t\\N\t\\N\t\\N\t2024-01-03T05:00:00+00:00\t")
    assert b"hunter2pw" not in environ and b"tok-123456" not in environ and b"PYTHONPATH=" in environ


def test_workers_build_their_own_encoders_when_a_column_has_a_bind_processor(tmp_path):
    """A json field's COPY encoder wraps its SQLAlchemy bind processor (not picklable by name): the
    setup then carries none and each worker builds the encoders itself, as the run's target does."""
    from syncrunner.runtime.parallel import _shipped_encoders
    from syncrunner.runtime.parallel_worker import copy_encoders
    from syncrunner.spec.load import load_spec

    env = {"ITEM_DB_URL": "mysql+pymysql://u@127.0.0.1/db"}
    plain = load_spec(write_spec(tmp_path), env)
    names, encoders = _shipped_encoders(plain)
    assert names == copy_encoders(plain)[0] and all(type(n) is str for n in names)
    with_json = load_spec(write_spec(tmp_path, name="j.yaml", extra="",
                                     text=write_spec(tmp_path).read_text().replace(
                                         "type: date}", "type: date}\n  tags:       {from: name, type: json}")), env)
    assert "tags" in copy_encoders(with_json)[0]
    assert _shipped_encoders(with_json) is None


def test_a_counted_first_load_starts_its_workers_at_once_and_a_rerun_does_not(tmp_path, mysql_url, pg_url):
    """Into an empty target every row is mapped, so a counted source larger than the in-process
    allowance starts the workers before its first chunk; into a filled one (rows may be skipped
    unchanged) they start only after that many rows were mapped here."""
    make_source(mysql_url, 4000)
    spec = write_spec(tmp_path, chunk_size=500)
    at_first_chunk: list[int] = []

    def count_workers(chunk_no):
        if chunk_no == 1:
            at_first_chunk.append(len(_workers(os.getpid())))
    first = sync(spec, mysql_url, pg_url, map_workers=2, map_after=3000, count_total=True,
                 observers=[Chunks(count_workers)])
    again = sync(spec, mysql_url, pg_url, map_workers=2, map_after=3000, count_total=True, force=True,
                 observers=[Chunks(count_workers)])
    assert (first.stats.created, again.stats.fetched) == (4000, 4000)
    assert at_first_chunk == [2, 0]


def test_workers_map_for_targets_without_copy_and_write_the_same(tmp_path, mysql_url, target_url):
    """Into SQLite and MySQL (no COPY text) the workers send the mapped rows back: the table, the
    dead letters, the counts and the watermark are those of a run mapping in its own process."""
    src = make_source(mysql_url, 3000)
    with src.begin() as c:
        c.execute(item.update().where(item.c.id == 7).values(email="not-an-email"))
    results = {}
    for workers in (0, 2):
        table = f"items_w{workers}"
        spec = write_spec(tmp_path, chunk_size=500, batch_size=200, name=f"{table}.yaml", entity=table, table=table)
        first = sync(spec, mysql_url, target_url, map_workers=workers, map_after=0)
        again = sync(spec, mysql_url, target_url, map_workers=workers, map_after=0, full=True)
        results[workers] = dict(stats=(first.stats, again.stats), status=(first.status, again.status),
                                watermark=(first.watermark, again.watermark), table=_table(target_url, table),
                                dead=_dead(target_url, table),
                                by_workers=_metrics(target_url, table)["chunks_mapped_by_workers"])
    here, pooled = results[0], results[2]
    # the no-change run sends only the chunk holding the refused row (no stored fingerprint)
    assert here["by_workers"] == 0 and pooled["by_workers"] == 1
    assert pooled["status"] == ("partial", "success")
    assert (pooled["stats"][0].created, pooled["stats"][0].failed) == (2999, 1)
    assert pooled["stats"][1].unchanged == 2999  # the workers' fingerprints match this process's
    for key in ("stats", "watermark", "table", "dead"):
        assert pooled[key] == here[key], key


@pytest.mark.parametrize("setting,remote,expected", [
    ("", True, 0),        # default: an HTTP source's API bounds the run, workers would only add memory
    ("auto", True, 0),
    ("2", True, 2),       # an explicit count starts them for any source
    ("off", False, 0),
])
def test_an_http_source_gets_no_workers_unless_a_count_is_set(monkeypatch, setting, remote, expected):
    from syncrunner.runtime.settings import map_workers_from_env
    monkeypatch.setenv("SYNCRUNNER_MAP_WORKERS", setting)
    assert map_workers_from_env(remote_source=remote) == expected

