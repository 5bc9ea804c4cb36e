"""Grouped SQL reads with several queries at once (SYNCRUNNER_SQL_READERS): the same chunks, in
the same order with the same positions, as one query after the other, against a real MariaDB;
rows that land in a range while it is read are neither lost nor handed out twice."""
from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from syncrunner.adapters.sources.readers import readers_from_env
from syncrunner.adapters.sources.sql import SqlSource
from syncrunner.dburl import create_engine
from tests.test_sql_packed import FULL, _spec


def _table(url: str, rows: int) -> None:
    engine = create_engine(url)
    with engine.begin() as c:  # pairs of rows share a cursor value: the keyset's second column matters
        c.execute(sa.text("CREATE TABLE every_type (id INT PRIMARY KEY, v VARCHAR(20), updated_at DATETIME)"))
        c.execute(sa.text("INSERT INTO every_type SELECT seq, CONCAT('row ', seq), "
                          "'2025-01-01' + INTERVAL (seq DIV 2) MINUTE FROM seq_1_to_" + str(rows)))
    engine.dispose()


def _chunks(spec, monkeypatch, readers: int, after: int = 0) -> tuple[list, set[str], SqlSource]:
    monkeypatch.setattr(SqlSource, "PARALLEL_AFTER", after)
    monkeypatch.setenv("SYNCRUNNER_SQL_READERS", str(readers))
    monkeypatch.setenv("SYNCRUNNER_SQL_PACKED", "1")
    monkeypatch.setenv("SYNCRUNNER_SQL_GROUPED", "1")
    source = SqlSource(spec)
    threads: set[str] = set()
    out = []
    for chunk in source.chunks(FULL, None, 0):
        threads |= {t.name.split("_")[0] for t in threading.enumerate()}
        out.append((chunk.position, [dict(r) for r in chunk.records]))
    return out, threads, source


def test_parallel_reads_hand_out_exactly_the_chunks_of_a_sequential_read(mysql_url, tmp_path, monkeypatch):
    _table(mysql_url, 23)
    engine = create_engine(mysql_url)
    with engine.begin() as c:  # rows without a cursor: the second phase, read by key
        c.execute(sa.text("UPDATE every_type SET updated_at = NULL WHERE id % 3 = 0"))
    engine.dispose()
    spec = _spec(tmp_path, mysql_url, "SELECT id, v, updated_at FROM every_type", chunk_size=3)
    one, one_threads, _ = _chunks(spec, monkeypatch, 1)
    three, three_threads, source = _chunks(spec, monkeypatch, 3)
    assert [len(records) for _, records in one] == [3] * 5 + [1] + [3, 3, 1]  # 16 with a cursor, 7 without
    assert three == one
    ids = [r["id"] for _, records in three for r in records]
    assert ids == [i for i in range(1, 24) if i % 3] + [i for i in range(1, 24) if not i % 3]
    assert [p["phase"] for p, _ in three].count("null") == 3
    assert "sr-reader" in three_threads and "sr-reader" not in one_threads
    assert not [t for t in threading.enumerate() if t.name.startswith("sr-reader")]  # closed at the end
    assert source.metrics.extra["grouped_chunks"] == 9


def test_a_read_of_a_few_chunks_starts_no_readers_and_a_longer_one_starts_them_after_those(
        mysql_url, tmp_path, monkeypatch):
    _table(mysql_url, 20)
    spec = _spec(tmp_path, mysql_url, "SELECT id, v, updated_at FROM every_type", chunk_size=4)
    few, few_threads, _ = _chunks(spec, monkeypatch, 3, after=6)  # 5 chunks in all: all read one by one
    assert "sr-reader" not in few_threads
    more, more_threads, _ = _chunks(spec, monkeypatch, 3, after=2)
    assert "sr-reader" in more_threads and more == few


def test_rows_inserted_into_a_range_while_it_is_read_are_read_once(mysql_url, tmp_path, monkeypatch):
    """A range that comes back with more rows than a chunk holds (rows inserted between the index
    query that found its end and the read): the rest is read one chunk at a time from its start."""
    _table(mysql_url, 20)
    spec = _spec(tmp_path, mysql_url, "SELECT id, v, updated_at FROM every_type", chunk_size=4)
    engine = create_engine(mysql_url)
    real = SqlSource._read_group
    calls = []

    def read_group(self, conn, task):
        _, _, _, upto, _ = task
        if upto is not None and upto[-1] == 8 and not calls:  # the second range (rows 5-8) gets three more
            calls.append(task)
            with engine.begin() as c:
                c.execute(sa.text("INSERT INTO every_type VALUES (101, 'new', '2025-01-01 00:02:30'), "
                                  "(102, 'new', '2025-01-01 00:03:00'), (103, 'new', '2025-01-01 00:03:30')"))
        return real(self, conn, task)

    monkeypatch.setattr(SqlSource, "_read_group", read_group)
    chunks, _, _ = _chunks(spec, monkeypatch, 2)
    engine.dispose()
    ids = [r["id"] for _, records in chunks for r in records]
    assert sorted(ids) == list(range(1, 21)) + [101, 102, 103]  # each once
    assert all(len(records) <= 4 for _, records in chunks)
    assert [len(records) for _, records in chunks][:1] == [4]


def test_a_failed_read_reaches_the_run_after_the_chunks_before_it(mysql_url, tmp_path, monkeypatch):
    _table(mysql_url, 20)
    spec = _spec(tmp_path, mysql_url, "SELECT id, v, updated_at FROM every_type", chunk_size=4)
    real = SqlSource._read_group

    def read_group(self, conn, task):
        _, _, _, upto, _ = task
        if upto is not None and upto[-1] == 12:  # the third range (rows 9-12)
            raise sa.exc.OperationalError("SELECT", {}, Exception("server has gone away"))
        return real(self, conn, task)

    monkeypatch.setattr(SqlSource, "_read_group", read_group)
    monkeypatch.setattr(SqlSource, "PARALLEL_AFTER", 0)
    monkeypatch.setenv("SYNCRUNNER_SQL_READERS", "2")
    got = []
    with pytest.raises(sa.exc.OperationalError, match="gone away"):
        for chunk in SqlSource(spec).chunks(FULL, None, 0):
            got.append(chunk)
    assert [r["id"] for c in got for r in c.records] == list(range(1, 9))
    assert not [t for t in threading.enumerate() if t.name.startswith("sr-reader")]


def test_the_number_of_readers_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("SYNCRUNNER_SQL_READERS", raising=False)
    assert readers_from_env() == 3
    monkeypatch.setenv("SYNCRUNNER_SQL_READERS", "1")
    assert readers_from_env() == 1
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("SYNCRUNNER_SQL_READERS", bad)
        with pytest.raises(ValueError, match="SYNCRUNNER_SQL_READERS"):
            readers_from_env()


def test_a_run_that_stops_early_closes_the_readers_and_gives_their_connections_back(
        mysql_url, tmp_path, monkeypatch):
    _table(mysql_url, 40)
    spec = _spec(tmp_path, mysql_url, "SELECT id, v, updated_at FROM every_type", chunk_size=4)
    monkeypatch.setattr(SqlSource, "PARALLEL_AFTER", 0)
    monkeypatch.setenv("SYNCRUNNER_SQL_READERS", "3")
    source = SqlSource(spec)
    it = source.chunks(FULL, None, 0)
    first = next(it)
    assert [r["id"] for r in first.records] == [1, 2, 3, 4]
    assert [t for t in threading.enumerate() if t.name.startswith("sr-reader")]
    it.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("sr-reader")]
    assert source.engine.pool.checkedout() == 0
