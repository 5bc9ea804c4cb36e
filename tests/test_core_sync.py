"""Issue 2's correctness tests: a real MariaDB source and each real target (PostgreSQL, SQLite,
MariaDB)."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
import sqlalchemy as sa

from syncrunner.dburl import create_engine
from syncrunner.runtime.target import target_exists
from tests.helpers import BASE_TS, history, item, make_source, rows, sync, table_rows, write_spec


def _source_rows(url):
    return [(r.id, r.name, r.email, Decimal(str(r.amount)).quantize(Decimal("0.01")))
            for r in rows(url, "SELECT id, name, email, amount FROM item ORDER BY id")]


def _target_rows(url):
    return [(r.id, r.name, r.email, Decimal(str(r.amount)).quantize(Decimal("0.01")))
            for r in rows(url, "SELECT id, name, email, amount FROM items ORDER BY id")]


class Raiser:
    """An observer that fails the run right after a given chunk has committed."""

    def __init__(self, after_chunk: int):
        self.after_chunk = after_chunk

    def started(self, *a): pass
    def finished(self, *a): pass

    def chunk_done(self, spec, chunk_no, stats):
        if chunk_no == self.after_chunk:
            raise RuntimeError(f"boom after chunk {chunk_no}")


def test_5000_rows_sharing_one_timestamp_land_exactly_once(tmp_path, mysql_url, target_url):
    make_source(mysql_url, 5000, same_ts=True)
    result = sync(write_spec(tmp_path, chunk_size=1000), mysql_url, target_url)
    assert result.status == "success", result.error
    assert (result.stats.fetched, result.stats.created, result.stats.updated) == (5000, 5000, 0)
    assert rows(target_url, "SELECT COUNT(*), COUNT(DISTINCT id), MIN(id), MAX(id) FROM items")[0] == (5000, 5000, 1, 5000)
    assert _target_rows(target_url) == _source_rows(mysql_url)
    h = history(target_url)[-1]
    assert (h.status, h.records_processed, h.records_created) == ("success", 5000, 5000)
    assert result.stats.chunks == 5


def test_second_run_fetches_only_changes_including_one_made_during_the_first(tmp_path, mysql_url, target_url):
    src = make_source(mysql_url, 3000)

    class ChangeDuringRun(Raiser):
        def chunk_done(self, spec, chunk_no, stats):
            if chunk_no == 2:  # row 10 was already synced in chunk 1; change it behind the run's back
                with src.begin() as c:
                    c.execute(item.update().where(item.c.id == 10).values(
                        name="changed during run 1", updated_at=BASE_TS + dt.timedelta(days=30)))

    first = sync(write_spec(tmp_path), mysql_url, target_url, observers=[ChangeDuringRun(0)])
    assert first.status == "success"
    # row 10's new cursor is ahead of the keyset position, so run 1 itself fetched it again
    assert (first.stats.fetched, first.stats.created, first.stats.updated) == (3001, 3000, 1)
    wm = dt.datetime.fromisoformat(first.watermark)
    changed = [20, 2000, 2999]
    with src.begin() as c:
        c.execute(item.update().where(item.c.id.in_(changed)).values(
            name="changed after run 1", updated_at=BASE_TS + dt.timedelta(days=31)))
        # a source transaction that committed late, stamped 2 minutes before run 1's watermark:
        # the reference's end_time cursor loses it; the lookback catches it
        c.execute(item.update().where(item.c.id == 30).values(
            name="committed late", updated_at=(wm - dt.timedelta(minutes=2)).astimezone(_ny()).replace(tzinfo=None)))
    second = sync(write_spec(tmp_path), mysql_url, target_url)
    assert second.status == "success"
    assert second.window.mode == "delta"
    expected = rows(mysql_url, "SELECT COUNT(*) FROM item WHERE updated_at >= :s",
                    s=(wm - dt.timedelta(minutes=5)).astimezone(_ny()).replace(tzinfo=None))[0][0]
    assert second.stats.fetched == expected == 5  # 3 changed + the late one + row 10 at the watermark
    assert (second.stats.created, second.stats.updated, second.stats.unchanged) == (0, 4, 1)
    assert rows(target_url, "SELECT name FROM items WHERE id = 10")[0][0] == "changed during run 1"
    assert rows(target_url, "SELECT name FROM items WHERE id = 30")[0][0] == "committed late"
    assert _target_rows(target_url) == _source_rows(mysql_url)


def _ny():
    from zoneinfo import ZoneInfo
    return ZoneInfo("America/New_York")


def test_run_failing_after_third_chunk_resumes_from_checkpoint(tmp_path, mysql_url, target_url):
    make_source(mysql_url, 5000, same_ts=True)
    spec = write_spec(tmp_path, chunk_size=1000)
    first = sync(spec, mysql_url, target_url, observers=[Raiser(3)])
    assert first.status == "failed" and "boom after chunk 3" in first.error
    h = history(target_url)[-1]
    assert h.status == "failed" and h.end_time is not None
    assert (h.records_processed, h.records_created) == (3000, 3000)
    assert rows(target_url, "SELECT COUNT(*) FROM items")[0][0] == 3000  # data agrees with checkpoint

    second = sync(spec, mysql_url, target_url)
    assert second.status == "success"
    assert second.window.resume_run == first.run_id
    assert (second.stats.fetched, second.stats.created, second.stats.updated) == (2000, 2000, 0)
    assert _target_rows(target_url) == _source_rows(mysql_url)
    created = [r.records_created for r in history(target_url)]
    assert sum(created) == 5000  # nothing written twice


def test_dry_run_writes_nothing_and_reports_counts(tmp_path, mysql_url, target_url):
    make_source(mysql_url, 1500)
    result = sync(write_spec(tmp_path), mysql_url, target_url, dry_run=True)
    assert result.status == "dry-run"
    assert (result.stats.fetched, result.stats.failed) == (1500, 0)
    if target_url.startswith("sqlite"):
        assert not target_exists(target_url)
    else:
        engine = create_engine(target_url)
        assert sa.inspect(engine).get_table_names() == []
        engine.dispose()


def test_max_records_stops_at_exactly_n(tmp_path, mysql_url, target_url):
    make_source(mysql_url, 5000)
    result = sync(write_spec(tmp_path, chunk_size=1000), mysql_url, target_url, max_records=2345)
    assert result.stats.fetched == 2345
    assert rows(target_url, "SELECT COUNT(*), MAX(id) FROM items")[0] == (2345, 2345)
    # the next delta run carries on from the watermark of the 2,345th row
    rest = sync(write_spec(tmp_path, chunk_size=1000), mysql_url, target_url)
    assert rest.stats.created == 5000 - 2345
    assert _target_rows(target_url) == _source_rows(mysql_url)


def test_an_older_row_is_written_from_sql_and_kept_out_and_dead_lettered_under_the_stale_guard(
        tmp_path, mysql_url, target_url):
    """A SQL source's row is its current row: written even when its cursor is older than the stored
    one. With `source.serves_stale_copies: true` (a source that may serve an out-of-date copy) the
    stored row is kept, and the record is counted, dead-lettered with the reason, and the run ends
    `partial`; --force writes it."""
    src = make_source(mysql_url, 100)
    plain = write_spec(tmp_path)
    guarded = write_spec(tmp_path, name="guarded.yaml", entity="guarded")
    guarded.write_text(guarded.read_text().replace("  chunk_size:", "  serves_stale_copies: true\n  chunk_size:"))
    for spec in (plain, guarded):
        sync(spec, mysql_url, target_url)
    engine = create_engine(target_url)
    with engine.begin() as c:
        for table in ("items", "guarded"):
            c.execute(sa.text(f"UPDATE {table} SET name = 'edited locally', updated_at = :t WHERE id = 7"),
                      {"t": dt.datetime(2030, 1, 1)})
    engine.dispose()
    with src.begin() as c:  # the source sends a changed but older version
        c.execute(item.update().where(item.c.id == 7).values(email="seven@example.com"))
    written = sync(plain, mysql_url, target_url, full=True)
    assert (written.status, written.stats.stale, written.stats.updated, written.stats.unchanged) == ("success", 0, 1, 99)
    assert rows(target_url, "SELECT name FROM items WHERE id = 7")[0][0] == "item 7"
    kept = sync(guarded, mysql_url, target_url, full=True)
    assert (kept.status, kept.stats.stale, kept.stats.failed, kept.stats.updated, kept.stats.unchanged) == \
        ("partial", 1, 1, 0, 99)
    assert rows(target_url, "SELECT name FROM guarded WHERE id = 7")[0][0] == "edited locally"
    dead = rows(target_url, "SELECT record_key, field, reason, raw_record FROM sync_dead_letters")
    assert [(k, f) for k, f, _, _ in dead] == [("7", "updated_at")]
    assert "older than the stored row" in dead[0][2] and "2030-01-01" in dead[0][2]
    assert "seven@example.com" in dead[0][3]
    assert history(target_url)[-1].records_failed == 1
    forced = sync(guarded, mysql_url, target_url, force=True)
    assert (forced.status, forced.stats.updated, forced.stats.unchanged) == ("success", 1, 99)
    assert rows(target_url, "SELECT name FROM guarded WHERE id = 7")[0][0] == "item 7"


def test_bad_records_are_dead_lettered_and_the_run_is_partial(tmp_path, mysql_url, target_url):
    src = make_source(mysql_url, 50)
    with src.begin() as c:
        c.execute(item.update().where(item.c.id == 3).values(email="not-an-email"))
        c.execute(item.update().where(item.c.id == 4).values(name=None))
        c.execute(item.update().where(item.c.id == 5).values(seen_on="0000-00-00"))
        c.execute(item.update().where(item.c.id == 6).values(seen_on="31/12/2024"))
    result = sync(write_spec(tmp_path), mysql_url, target_url)
    assert result.status == "partial"
    assert (result.stats.fetched, result.stats.created, result.stats.failed) == (50, 46, 4)
    dead = {r.record_key: r for r in rows(target_url, "SELECT * FROM sync_dead_letters ORDER BY id")}
    assert set(dead) == {"3", "4", "5", "6"}
    assert dead["3"].field == "email" and "invalid email" in dead["3"].reason
    assert dead["4"].field == "name" and "required" in dead["4"].reason
    assert dead["5"].field == "seen_on" and "zero date" in dead["5"].reason
    assert dead["6"].field == "seen_on" and "not a date" in dead["6"].reason
    assert json.loads(dead["3"].raw_record)["email"] == "not-an-email"  # the raw record is kept
    assert all(r.run_id == result.run_id for r in dead.values())
    assert history(target_url)[-1].records_failed == 4
    assert rows(target_url, "SELECT COUNT(*) FROM items WHERE id IN (3, 4, 5, 6)")[0][0] == 0


def test_row_the_database_refuses_costs_one_row(tmp_path, mysql_url, pg_url):
    """A bulk statement that fails falls back to row by row for that sub-batch."""
    make_source(mysql_url, 300)
    engine = create_engine(pg_url)
    with engine.begin() as c:  # a stricter table than the spec: amounts over 400 are refused
        c.execute(sa.text("CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, email TEXT, "
                          "amount NUMERIC(12,2) CHECK (amount <= 400), seen_on DATE, "
                          "updated_at TIMESTAMPTZ NOT NULL)"))
    engine.dispose()
    result = sync(write_spec(tmp_path, batch_size=100), mysql_url, pg_url)
    refused = [i for i in range(1, 301) if i * 1.5 > 400]
    assert result.status == "partial"
    assert (result.stats.created, result.stats.failed) == (300 - len(refused), len(refused))
    keys = sorted(int(r[0]) for r in rows(pg_url, "SELECT record_key FROM sync_dead_letters"))
    assert keys == refused
    assert "database refused the row" in rows(pg_url, "SELECT reason FROM sync_dead_letters LIMIT 1")[0][0]


def test_c_mysql_driver_source_gives_the_same_rows(tmp_path, mysql_url, pg_url):
    """mysql+mysqldb:// (the optional C driver, `pip install syncrunner[mysql-c]`) reads the same rows
    through the same keyset chunks as PyMySQL."""
    pytest.importorskip("MySQLdb", reason="mysqlclient is not installed (optional extra mysql-c)")
    make_source(mysql_url, 3000, same_ts=True)
    c_url = mysql_url.replace("mysql+pymysql://root:@", "mysql+mysqldb://root@")
    result = sync(write_spec(tmp_path, chunk_size=700), c_url, pg_url)
    assert result.status == "success", result.error
    assert (result.stats.fetched, result.stats.created) == (3000, 3000)
    assert _target_rows(pg_url) == _source_rows(mysql_url)


def test_an_unchanged_bad_record_re_read_is_not_a_new_failure(tmp_path, mysql_url, target_url):
    """A bad record inside the next run's lookback window is read again: it is already kept in the
    dead-letter table, so the run is not `partial` for it and it is not kept twice. If it changes
    (and is still bad) it is a new failure."""
    src = make_source(mysql_url, 50)
    with src.begin() as c:  # the newest row is bad: every delta run's lookback re-reads it
        c.execute(item.update().where(item.c.id == 50).values(email="nobody@"))
    spec = write_spec(tmp_path)
    first = sync(spec, mysql_url, target_url)
    assert (first.status, first.stats.failed) == ("partial", 1)
    again = sync(spec, mysql_url, target_url)
    assert again.window.mode == "delta" and again.stats.fetched >= 1
    assert (again.status, again.stats.failed, again.stats.known_bad) == ("success", 0, 1)
    assert history(target_url)[-1].records_failed == 0
    assert rows(target_url, "SELECT COUNT(*) FROM sync_dead_letters")[0][0] == 1
    # the same for a value stored as NULL (on_invalid: null): its entry is kept once
    nulled = write_spec(tmp_path, name="nulled.yaml", entity="nulled").read_text().replace(
        "validators: [email]}", "validators: [email], on_invalid: \"null\"}")
    (tmp_path / "nulled.yaml").write_text(nulled)
    for _ in range(2):
        assert sync(tmp_path / "nulled.yaml", mysql_url, target_url).status == "success"
    assert rows(target_url, "SELECT COUNT(*) FROM sync_dead_letters WHERE action = 'nulled'")[0][0] == 1
    assert rows(target_url, "SELECT email FROM nulled WHERE id = 50")[0][0] is None
    with src.begin() as c:
        c.execute(item.update().where(item.c.id == 50).values(email="still@bad@"))
    third = sync(spec, mysql_url, target_url)
    assert (third.status, third.stats.failed, third.stats.known_bad) == ("partial", 1, 0)
    assert rows(target_url, "SELECT COUNT(*) FROM sync_dead_letters WHERE action = 'rejected'")[0][0] == 2


class FailingSource:
    """The real SQL source, failing when asked for chunk `fail_at` (a source dying mid-run while
    the previous chunk is still being written on the write-ahead thread)."""

    def __init__(self, spec_path, source_url, fail_at: int):
        from syncrunner.sources.sql import SqlSource
        from syncrunner.spec.load import load_spec
        self.inner = SqlSource(load_spec(spec_path, {"ITEM_DB_URL": source_url}))
        self.metrics = self.inner.metrics
        self.fail_at = fail_at

    def chunks(self, window, position, limit):
        for no, chunk in enumerate(self.inner.chunks(window, position, limit), start=1):
            if no == self.fail_at:
                raise ConnectionError(f"source lost at chunk {no}")
            yield chunk

    def count(self, window):
        return None

    def close(self):
        self.inner.close()


def test_source_failing_while_a_chunk_is_being_written_keeps_that_chunk_and_resumes(
        tmp_path, mysql_url, target_url):
    make_source(mysql_url, 5000, same_ts=True)
    spec = write_spec(tmp_path, chunk_size=1000)
    first = sync(spec, mysql_url, target_url, source=FailingSource(spec, mysql_url, fail_at=4))
    assert first.status == "failed" and "source lost at chunk 4" in first.error
    h = history(target_url)[-1]
    # chunk 3 was in flight when chunk 4's fetch failed: it committed, and the run's record says so
    assert (h.status, h.records_processed, h.records_created) == ("failed", 3000, 3000)
    assert rows(target_url, "SELECT COUNT(*) FROM items")[0][0] == 3000
    second = sync(spec, mysql_url, target_url)
    assert second.window.resume_run == first.run_id
    assert (second.status, second.stats.fetched, second.stats.created) == ("success", 2000, 2000)
    assert _target_rows(target_url) == _source_rows(mysql_url)


def test_write_ahead_commits_rows_counts_and_checkpoints_chunk_by_chunk_in_order(tmp_path, mysql_url, pg_url):
    make_source(mysql_url, 3500)
    spec = write_spec(tmp_path, chunk_size=1000)
    seen = []

    class Watch:
        def started(self, *a): pass
        def finished(self, *a): pass

        def chunk_done(self, spec, chunk_no, stats):  # the checkpoint is committed when we hear of it
            seen.append((chunk_no, stats.fetched,
                         rows(pg_url, "SELECT COUNT(*) FROM items")[0][0],
                         json.loads(json.dumps(history(pg_url)[-1].checkpoint))["chunks"]))

    result = sync(spec, mysql_url, pg_url, observers=[Watch()])
    assert result.status == "success" and result.stats.created == 3500
    assert seen == [(1, 1000, 1000, 1), (2, 2000, 2000, 2), (3, 3000, 3000, 3), (4, 3500, 3500, 4)]
    assert _target_rows(pg_url) == _source_rows(mysql_url)
