"""Row fingerprints (target.fingerprint): a record re-read unchanged is skipped before mapping, and
every way a stored row can be out of date still takes the normal path. Real MariaDB source, each
real target."""
from __future__ import annotations

import datetime as dt
import json

from tests.helpers import BASE_TS, history, item, make_source, rows, sync, write_spec
from tests.test_deletes import SOFT, _deleted, _delete_upstream


def _metrics(url) -> dict:
    m = history(url)[-1].performance_metrics
    return json.loads(m) if isinstance(m, str) else m


def _counts(result) -> tuple:
    s = result.stats
    return s.created, s.updated, s.unchanged, s.skipped


def _target(url) -> list[tuple]:
    return [tuple(r) for r in rows(url, "SELECT id, name, amount, updated_at FROM items ORDER BY id")]


def test_unchanged_rows_are_skipped_changed_ones_written_and_the_watermark_kept(
        tmp_path, mysql_url, target_url):
    src = make_source(mysql_url, 2500)
    spec = write_spec(tmp_path, chunk_size=1000)
    first = sync(spec, mysql_url, target_url)
    assert _counts(first) == (2500, 0, 0, 0)
    assert rows(target_url, "SELECT COUNT(*) FROM items WHERE _sr_fingerprint IS NULL")[0][0] == 0

    again = sync(spec, mysql_url, target_url, full=True)
    assert _counts(again) == (0, 0, 2500, 2500)
    assert _metrics(target_url)["records_skipped_by_fingerprint"] == 2500
    h = history(target_url)
    assert h[-1].watermark == h[0].watermark  # skipped rows still carry the cursor forward

    # three rows change in place (same cursor: a source that forgets to bump it), one is new
    with src.begin() as c:
        c.execute(item.update().where(item.c.id.in_([5, 1500, 2400])).values(name="renamed"))
        c.execute(item.insert(), [dict(id=9999, name="new", email="n@example.com", amount=1,
                                       seen_on="2025-01-02", updated_at=BASE_TS + dt.timedelta(minutes=10))])
    before = _target(target_url)
    full = sync(spec, mysql_url, target_url, full=True)
    assert _counts(full) == (1, 3, 2497, 2497)
    after = dict((r[0], r) for r in _target(target_url))
    assert [after[i][1] for i in (5, 1500, 2400, 9999)] == ["renamed", "renamed", "renamed", "new"]
    assert sum(1 for r in before if after[r[0]] != r) == 3


def test_a_spec_edit_maps_everything_once_counts_equal_rows_unchanged_then_skips_again(
        tmp_path, mysql_url, target_url):
    make_source(mysql_url, 1200)
    spec = write_spec(tmp_path, chunk_size=500)
    sync(spec, mysql_url, target_url)
    spec.write_text(spec.read_text() + "# a comment changes the spec's digest\n")
    edited = sync(spec, mysql_url, target_url, full=True)
    # every fingerprint is stale, so every record is mapped; none differs, so none is an update
    assert _counts(edited) == (0, 0, 1200, 0)
    assert sync(spec, mysql_url, target_url, full=True).stats.skipped == 1200


def test_force_rewrites_and_a_row_edited_in_the_target_is_kept_until_its_source_changes(
        tmp_path, mysql_url, target_url):
    from syncrunner.dburl import create_engine
    import sqlalchemy as sa
    src = make_source(mysql_url, 300)
    spec = write_spec(tmp_path)
    sync(spec, mysql_url, target_url)
    forced = sync(spec, mysql_url, target_url, full=True, force=True)
    assert _counts(forced) == (0, 0, 300, 0)  # --force maps and compares every record
    engine = create_engine(target_url)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE items SET name = 'local', updated_at = :t WHERE id = 7"),
                  {"t": dt.datetime(2030, 1, 1)})
    engine.dispose()
    full = sync(spec, mysql_url, target_url, full=True)
    assert (full.stats.skipped, full.stats.stale) == (300, 0)  # its source row did not change
    assert rows(target_url, "SELECT name FROM items WHERE id = 7")[0][0] == "local"
    assert history(target_url)[-1].watermark == history(target_url)[0].watermark  # the source's, not 2030
    with src.begin() as c:  # the source row changes (its cursor older than the edit's): written
        c.execute(item.update().where(item.c.id == 7).values(email="seven@example.com"))
    again = sync(spec, mysql_url, target_url, full=True)
    assert (again.stats.skipped, again.stats.stale, again.stats.updated) == (299, 0, 1)
    assert rows(target_url, "SELECT name FROM items WHERE id = 7")[0][0] == "item 7"


def test_a_soft_deleted_row_back_upstream_unchanged_is_restored_and_sweeps_see_skipped_rows(
        tmp_path, mysql_url, target_url):
    src = make_source(mysql_url, 400)
    spec = write_spec(tmp_path, extra=SOFT)
    sync(spec, mysql_url, target_url)
    kept = rows(mysql_url, "SELECT * FROM item WHERE id IN (10, 11) ORDER BY id")
    _delete_upstream(src, [10, 11])
    swept = sync(spec, mysql_url, target_url, full=True)
    assert swept.stats.skipped == 398  # skipped rows count as seen: only the two are swept
    assert _deleted(target_url) == [10, 11]
    with src.begin() as c:  # exactly as they were: same values, same cursor, same fingerprint
        c.execute(item.insert(), [dict(r._mapping) for r in kept])
    back = sync(spec, mysql_url, target_url, full=True)
    assert (back.stats.updated, back.stats.skipped) == (2, 398)
    assert _deleted(target_url) == []


def test_fingerprint_false_adds_no_column_and_maps_every_record(tmp_path, mysql_url, pg_url):
    make_source(mysql_url, 200)
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("  batch_size: 500\n", "  batch_size: 500\n  fingerprint: false\n"))
    sync(spec, mysql_url, pg_url)
    cols = [r[0] for r in rows(pg_url, "SELECT column_name FROM information_schema.columns "
                                       "WHERE table_name = 'items'")]
    assert "_sr_fingerprint" not in cols
    assert _counts(sync(spec, mysql_url, pg_url, full=True)) == (0, 0, 200, 0)


def test_a_field_named_like_the_fingerprint_column_is_a_lint_error(tmp_path):
    from syncrunner.spec.load import check_spec
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("  id:         {from: id", "  _sr_fingerprint: {from: id, type: integer}\n  id:         {from: id"))
    _, problems = check_spec(spec, {"ITEM_DB_URL": "mysql+pymysql://x@h/db"})
    assert any(p.key == "fields._sr_fingerprint" and "rename" in p.message for p in problems), problems


def test_stored_fingerprints_say_which_keys_do_not_match_the_same_on_every_target(target_url):
    """The chunk lookup: PostgreSQL compares in the database (an anti-join over array parameters),
    the other targets fetch the stored fingerprints; both must name exactly the keys whose live
    stored row lacks the given fingerprint. Integer and string keys, a quote and a comma in one."""
    import sqlalchemy as sa
    from syncrunner.core.fingerprint import FP_COLUMN
    from syncrunner.dburl import create_engine
    from syncrunner.runtime.fplookup import StoredFingerprints
    engine = create_engine(target_url)
    md = sa.MetaData()
    by_int = sa.Table("fp_int", md, sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
                      sa.Column(FP_COLUMN, sa.BigInteger), sa.Column("deleted_at", sa.DateTime))
    by_text = sa.Table("fp_text", md, sa.Column("code", sa.String(40), primary_key=True),
                       sa.Column(FP_COLUMN, sa.BigInteger), sa.Column("deleted_at", sa.DateTime))
    gone = dt.datetime(2025, 1, 1)
    stored = [(1, 10, None), (2, 20, None), (3, None, None), (4, 40, gone), (5, -(2 ** 63), None)]
    codes = {1: 'a"b,c', 2: "plain", 3: "x\\y", 4: "{brace}", 5: "five"}
    md.create_all(engine)
    with engine.begin() as c:
        c.execute(by_int.insert(), [dict(id=k, **{FP_COLUMN: f}, deleted_at=d) for k, f, d in stored])
        c.execute(by_text.insert(), [dict(code=codes[k], **{FP_COLUMN: f}, deleted_at=d) for k, f, d in stored])
    # asked: 1 same, 2 different, 3 stored without one, 4 soft-deleted, 5 same (smallest BIGINT), 6 missing
    asked = [1, 2, 3, 4, 5, 6]
    fps = [10, 21, 30, 40, -(2 ** 63), 60]
    codes[6] = "six"
    for table, keys, expect in ((by_int, [(k,) for k in asked], {(2,), (3,), (4,), (6,)}),
                                (by_text, [(codes[k],) for k in asked], {(codes[k],) for k in (2, 3, 4, 6)})):
        lookup = StoredFingerprints(engine, table, [table.primary_key.columns.keys()[0]], table.c.deleted_at)
        with engine.connect() as c:
            lookup.begin(c)
        assert lookup.unmatched(keys, fps) == expect
        lookup.close()
        with_deleted = StoredFingerprints(engine, table, [table.primary_key.columns.keys()[0]], None)
        with engine.connect() as c:
            with_deleted.begin(c)
        assert with_deleted.unmatched(keys, fps) == expect - {keys[3]}
        with_deleted.close()
    # a two-column key: every target fetches the stored fingerprints (a tuple IN over a parameter)
    by_pair = sa.Table("fp_pair", md, sa.Column("a", sa.BigInteger, primary_key=True, autoincrement=False),
                       sa.Column("b", sa.String(20), primary_key=True), sa.Column(FP_COLUMN, sa.BigInteger))
    by_pair.create(engine)
    with engine.begin() as c:
        c.execute(by_pair.insert(), [dict(a=k, b=codes[k], **{FP_COLUMN: f}) for k, f, _ in stored])
    pairs = StoredFingerprints(engine, by_pair, ["a", "b"], None)
    with engine.connect() as c:
        pairs.begin(c)
    assert pairs.unmatched([(k, codes[k]) for k in asked], fps) == {(k, codes[k]) for k in (2, 3, 6)}
    assert pairs.unmatched([(1, "not a's code"), (5, codes[5])], [10, -(2 ** 63)]) == {(1, "not a's code")}
    pairs.close()
    engine.dispose()


def test_lookups_leave_no_chunk_data_for_the_garbage_collector(tmp_path, mysql_url):
    """A no-change run into SQLite looks every chunk up by fetching the stored fingerprints: the
    chunk's keys must travel as a parameter, not inside a statement built per chunk (SQLAlchemy
    objects in reference cycles, held until the collector runs:
    107 MB against 69 MB for a 1,000,000-row no-change run)."""
    import gc
    make_source(mysql_url, 3000)
    spec = write_spec(tmp_path, chunk_size=1000)
    target = f"sqlite:///{tmp_path / 'target.db'}"
    assert sync(spec, mysql_url, target, map_workers=0).stats.created == 3000
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        again = sync(spec, mysql_url, target, full=True, map_workers=0)
        gc.collect()
        chunk_sized = [o for o in gc.garbage if isinstance(o, (list, tuple, dict)) and len(o) >= 500]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert again.stats.unchanged == 3000
    assert not chunk_sized, [repr(o)[:80] for o in chunk_sized[:3]]


def _pg_lookup(pg_url: str, name: str, stored: dict[int, int]):
    """A PostgreSQL table of id -> stored fingerprint, and a begun StoredFingerprints over it."""
    import sqlalchemy as sa
    from syncrunner.core.fingerprint import FP_COLUMN
    from syncrunner.runtime.fplookup import StoredFingerprints
    from syncrunner.runtime.target import make_engine
    engine = make_engine(pg_url)
    md = sa.MetaData()
    table = sa.Table(name, md, sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
                     sa.Column(FP_COLUMN, sa.BigInteger))
    md.create_all(engine)
    with engine.begin() as c:
        c.execute(table.insert(), [{"id": k, FP_COLUMN: f} for k, f in stored.items()])
    lookup = StoredFingerprints(engine, table, ["id"], None)
    with engine.connect() as c:
        lookup.begin(c)
    return engine, lookup


def test_the_lookup_connection_is_held_for_the_run_and_replaced_when_it_drops(pg_url):
    """One connection serves every chunk's lookup (no checkout and pre-ping per chunk); if the
    server drops it between two chunks, the next lookup reconnects instead of failing the run."""
    import sqlalchemy as sa
    engine, lookup = _pg_lookup(pg_url, "fp_held", {1: 10, 2: 20})
    pids = set()
    for _ in range(3):
        assert lookup.unmatched([(1,), (2,)], [10, 99]) == {(2,)}
        pids.add(lookup._conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        lookup._conn.rollback()
    assert len(pids) == 1
    with engine.connect() as admin:
        assert admin.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pids.pop()}).scalar_one()
    assert lookup.unmatched([(1,), (2,)], [10, 99]) == {(2,)}
    lookup.close()
    assert lookup._conn is None
    engine.dispose()


def test_postgresql_lookups_run_outside_a_transaction_and_the_pool_gets_its_connection_back_as_it_was(pg_url):
    """A lookup is one statement: on PostgreSQL its connection is in autocommit (no BEGIN and
    ROLLBACK round trips), it still sees each commit made between two lookups, and once the
    lookups close, the pooled connection is transactional again for whoever takes it next (the
    chunks' writes need their transactions)."""
    import sqlalchemy as sa
    engine, lookup = _pg_lookup(pg_url, "fp_autocommit", {1: 10, 2: 20})
    assert lookup.unmatched([(1,), (2,)], [10, 21]) == {(2,)}
    held = lookup._conn.connection.dbapi_connection
    assert held.autocommit is True
    with engine.begin() as c:  # a chunk commits between two lookups
        c.execute(sa.text("UPDATE fp_autocommit SET _sr_fingerprint = 21 WHERE id = 2"))
    assert lookup.unmatched([(1,), (2,)], [10, 21]) == set()
    lookup.close()
    assert not held.closed and held.autocommit is False  # back in the pool, reset on check-in
    engine.dispose()


def test_fingerprints_are_stable_salted_and_fit_a_bigint(tmp_path, mysql_url):
    from syncrunner.core.fingerprint import Fingerprinter
    from syncrunner.spec.load import load_spec
    spec = load_spec(write_spec(tmp_path), {"ITEM_DB_URL": mysql_url})
    records = [{"id": i, "name": f"item {i}"} for i in range(20000)]
    fps = Fingerprinter(spec, skip_validation=False).of(records)
    assert fps == Fingerprinter(spec, skip_validation=False).of(records)  # the same in every process
    assert len(set(fps)) == len(records)
    assert all(-(1 << 63) <= f < (1 << 63) for f in fps) and min(fps) < 0 < max(fps)
    other = Fingerprinter(spec, skip_validation=True).of(records)  # the salt: --skip-validation
    assert not set(other) & set(fps)
    changed = Fingerprinter(spec, skip_validation=False).of([{"id": 1, "name": "item 1 "}])
    assert changed[0] != fps[1]  # any change of a value changes the fingerprint


def test_a_postgresql_lookup_probes_the_key_index_instead_of_reading_the_whole_table(pg_url):
    """Cost follows the chunk, not the table: a chunk's lookup reads its keys' rows by the key's
    index. As NOT EXISTS, PostgreSQL planned a hash anti-join that read every stored row for every
    chunk once a chunk was a fair share of the table (a 200,000-row no-change run spent half its
    time there); the plan is asked of the server as the run sends the statement."""
    import sqlalchemy as sa
    stored = {k: k * 7 for k in range(1, 50_001)}
    engine, lookup = _pg_lookup(pg_url, "fp_plan", stored)
    keys = list(range(20_001, 22_501))  # one bench chunk
    with engine.connect() as c:
        c.exec_driver_sql("ANALYZE fp_plan")
        sql = lookup._anti_join(c)
        params = {"keys": "{" + ",".join(map(str, keys)) + "}", "fps": "{" + ",".join(str(k * 7) for k in keys) + "}"}
        plan = "\n".join(r[0] for r in c.execute(sa.text(f"EXPLAIN {sql.text}"), params))
    assert "Seq Scan on fp_plan" not in plan and "fp_plan_pkey" in plan, plan
    assert lookup.unmatched([(k,) for k in keys[:3]] + [(60_000,)], [k * 7 for k in keys[:3]] + [1]) == {(60_000,)}
    lookup.close()
    engine.dispose()
