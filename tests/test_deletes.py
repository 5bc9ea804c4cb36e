"""Issue 4: mark and sweep of rows deleted upstream (deletes: {mode: sweep}) on each real target."""
from __future__ import annotations

import datetime as dt

import pytest

from syncrunner.dburl import create_engine
from tests.helpers import BASE_TS, history, item, make_source, rows, sync, write_spec
from tests.test_core_sync import Raiser

SOFT = "deletes: {mode: sweep, action: soft}\n"
HARD = "deletes: {mode: sweep, action: hard, max_delete_fraction: 0.1}\n"


def _delete_upstream(src, ids) -> None:
    with src.begin() as c:
        c.execute(item.delete().where(item.c.id.in_(list(ids))))


def _deleted(url) -> list[int]:
    return [r[0] for r in rows(url, "SELECT id FROM items WHERE deleted_at IS NOT NULL ORDER BY id")]


def _metrics(url) -> dict:
    import json
    m = history(url)[-1].performance_metrics
    return json.loads(m) if isinstance(m, str) else m


def test_rows_deleted_upstream_are_soft_deleted_by_the_next_full_run_and_undeleted_when_back(
        tmp_path, mysql_url, target_url):
    src = make_source(mysql_url, 1000)
    spec = write_spec(tmp_path, extra=SOFT)
    assert sync(spec, mysql_url, target_url).status == "success"
    gone = list(range(100, 150))
    _delete_upstream(src, gone)

    delta = sync(spec, mysql_url, target_url)  # a delta run cannot see deletes: it must not guess
    assert delta.status == "success" and delta.window.mode == "delta"
    assert _deleted(target_url) == []
    assert "windowed run" in _metrics(target_url)["deletes"]["reason"]

    full = sync(spec, mysql_url, target_url, full=True)
    assert full.status == "success"
    assert _deleted(target_url) == gone
    m = _metrics(target_url)
    assert (m["records_deleted"], m["deletes"]["status"], m["deletes"]["table_rows"]) == (50, "done", 1000)
    assert any("50 row(s) not seen upstream marked deleted" in n for n in full.notes)
    assert rows(target_url, "SELECT COUNT(*) FROM items")[0][0] == 1000  # soft: still there

    # two come back upstream (restored, newer timestamp): the upsert un-deletes them
    with src.begin() as c:
        c.execute(item.insert(), [dict(id=i, name=f"item {i}", email=f"user{i}@example.com", amount=1,
                                       seen_on="2025-01-02", updated_at=BASE_TS + dt.timedelta(days=400))
                                  for i in (100, 101)])
    back = sync(spec, mysql_url, target_url)
    assert back.status == "success" and back.stats.updated == 2
    assert _deleted(target_url) == gone[2:]
    # a second full run deletes nothing more, and leaves no staged keys behind
    assert sync(spec, mysql_url, target_url, full=True).status == "success"
    assert _metrics(target_url)["records_deleted"] == 0
    assert rows(target_url, "SELECT COUNT(*) FROM sr_seen_items")[0][0] == 0


def test_partial_max_records_and_windowed_runs_delete_nothing(tmp_path, mysql_url, target_url):
    src = make_source(mysql_url, 500)
    spec = write_spec(tmp_path, extra=SOFT)
    assert sync(spec, mysql_url, target_url).status == "success"
    _delete_upstream(src, range(1, 11))
    with src.begin() as c:
        c.execute(item.update().where(item.c.id == 20).values(email="not-an-email"))

    partial = sync(spec, mysql_url, target_url, full=True)
    assert partial.status == "partial"
    assert _deleted(target_url) == []
    assert _metrics(target_url)["deletes"]["reason"] == "not swept: the run ended partial"

    with src.begin() as c:
        c.execute(item.update().where(item.c.id == 20).values(email="ok@example.com"))
    capped = sync(spec, mysql_url, target_url, full=True, max_records=300)
    assert capped.status == "success" and _deleted(target_url) == []
    assert "--max-records" in _metrics(target_url)["deletes"]["reason"]

    since = sync(spec, mysql_url, target_url, start_date="2020-01-01")
    assert since.status == "success" and _deleted(target_url) == []
    assert "windowed run" in _metrics(target_url)["deletes"]["reason"]

    dry = sync(spec, mysql_url, target_url, full=True, dry_run=True)
    assert dry.status == "dry-run" and "deletes: not swept: --dry-run" in dry.notes

    assert sync(spec, mysql_url, target_url, full=True).status == "success"
    assert _deleted(target_url) == list(range(1, 11))


def test_mass_delete_is_refused_unless_allowed(tmp_path, mysql_url, target_url):
    src = make_source(mysql_url, 400)
    spec = write_spec(tmp_path, extra=SOFT)
    sync(spec, mysql_url, target_url)
    _delete_upstream(src, range(1, 201))  # half the table

    refused = sync(spec, mysql_url, target_url, full=True)
    assert refused.status == "success"  # the data sync itself is fine
    assert _deleted(target_url) == []
    d = _metrics(target_url)["deletes"]
    assert d["status"] == "refused" and d["candidates"] == 200 and d["fraction"] == 0.5
    assert "--allow-mass-delete" in d["reason"] and "200 of 400 rows (50%)" in d["reason"]
    assert any("--allow-mass-delete" in n for n in refused.notes)

    allowed = sync(spec, mysql_url, target_url, full=True, allow_mass_delete=True)
    assert allowed.status == "success"
    assert _deleted(target_url) == list(range(1, 201))


def test_hard_delete_removes_rows(tmp_path, mysql_url, target_url):
    src = make_source(mysql_url, 300)
    spec = write_spec(tmp_path, extra=HARD)
    sync(spec, mysql_url, target_url)
    assert "deleted_at" not in {c for c in _columns(target_url)}
    _delete_upstream(src, [5, 6, 7])
    sync(spec, mysql_url, target_url, full=True)
    assert rows(target_url, "SELECT COUNT(*) FROM items")[0][0] == 297
    assert rows(target_url, "SELECT COUNT(*) FROM items WHERE id IN (5, 6, 7)")[0][0] == 0


def _columns(url):
    import sqlalchemy as sa
    engine = create_engine(url)
    try:
        return [c["name"] for c in sa.inspect(engine).get_columns("items")]
    finally:
        engine.dispose()


def test_resumed_full_run_keeps_the_keys_staged_by_the_run_it_resumes(tmp_path, mysql_url, target_url):
    src = make_source(mysql_url, 5000, same_ts=True)
    spec = write_spec(tmp_path, chunk_size=1000, extra=SOFT)
    assert sync(spec, mysql_url, target_url).status == "success"
    _delete_upstream(src, [4500])

    first = sync(spec, mysql_url, target_url, full=True, observers=[Raiser(3)])
    assert first.status == "failed"
    staged = rows(target_url, "SELECT COUNT(*), MIN(generation), MAX(generation) FROM sr_seen_items")[0]
    assert staged == (3000, first.run_id, first.run_id)  # committed with the 3 chunks, no more
    _delete_upstream(src, [10])  # seen by the failed run before it was deleted: not swept this time

    second = sync(spec, mysql_url, target_url, full=True)
    assert second.status == "success" and second.window.resume_run == first.run_id
    assert second.stats.fetched == 1999
    # only the rows 1..3000 seen by run 1 and 3001..5000 seen by run 2 are kept
    assert _deleted(target_url) == [4500]
    assert _metrics(target_url)["records_deleted"] == 1
