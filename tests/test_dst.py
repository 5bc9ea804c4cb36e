"""Issue 22.2: the repeated hour of the autumn clock change. Source times are naive America/New_York;
on 2025-11-02 01:00-02:00 happens twice. A row stamped 01:59:59 in the first pass (EDT) and edited
in the second pass at 01:10 (EST) reads as older than the stored row: an edit made in the source must
land (a SQL source's row is its current row); only a source declared to serve out-of-date copies
keeps the stored row, and then the record is counted, dead-lettered and the run is `partial`."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from syncrunner.runtime.engine import run_spec
from syncrunner.runtime.strategy import RunOptions
from syncrunner.spec.load import load_spec
from tests.fakes.server import FakeAPI, Request, Response, route
from tests.helpers import history, item, make_source, rows, sync, write_spec

UTC = dt.timezone.utc
FIRST_PASS = dt.datetime(2025, 11, 2, 1, 59, 59)   # EDT: 05:59:59 UTC
SECOND_PASS = dt.datetime(2025, 11, 2, 1, 10, 0)   # EST (06:10 UTC), read as EDT by the documented rule


def _stored(url: str, table: str, key: int) -> tuple[str, dt.datetime]:
    name, ts = rows(url, f"SELECT name, updated_at FROM {table} WHERE id = :k", k=key)[0]
    if isinstance(ts, str):  # SQLite text
        ts = dt.datetime.fromisoformat(ts)
    return name, (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC)


def _edited_in_the_repeated_hour(tmp_path: Path, mysql_url: str, target_url: str, extra_source: str = "") -> Path:
    """Sync 10 rows, the newest stamped 01:59:59 in the first pass; then edit it in the second pass."""
    src = make_source(mysql_url, 10)
    with src.begin() as c:
        for i in range(1, 10):
            c.execute(item.update().where(item.c.id == i).values(
                updated_at=dt.datetime(2025, 11, 2, 0, 0) + dt.timedelta(minutes=i)))
        c.execute(item.update().where(item.c.id == 10).values(updated_at=FIRST_PASS))
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("  chunk_size:", f"{extra_source}  chunk_size:"))
    first = sync(spec, mysql_url, target_url)
    assert (first.status, first.stats.created) == ("success", 10)
    assert _stored(target_url, "items", 10) == ("item 10", dt.datetime(2025, 11, 2, 5, 59, 59, tzinfo=UTC))
    with src.begin() as c:
        c.execute(item.update().where(item.c.id == 10).values(name="edited in the second pass",
                                                               updated_at=SECOND_PASS))
    src.dispose()
    return spec


@pytest.mark.parametrize("full", [False, True], ids=["delta", "full"])
def test_an_edit_in_the_repeated_hour_lands(tmp_path, mysql_url, target_url, full):
    spec = _edited_in_the_repeated_hour(tmp_path, mysql_url, target_url)
    preview = sync(spec, mysql_url, target_url, full=full, dry_run=True)
    assert (preview.stats.updated, preview.stats.stale, preview.stats.failed) == (1, 0, 0)
    again = sync(spec, mysql_url, target_url, full=full)
    assert again.window.mode == ("full" if full else "delta")
    assert (again.status, again.stats.updated, again.stats.stale, again.stats.failed) == ("success", 1, 0, 0)
    # ambiguous local times read as their first occurrence (EDT): 01:10 -> 05:10 UTC
    assert _stored(target_url, "items", 10) == ("edited in the second pass",
                                                 dt.datetime(2025, 11, 2, 5, 10, tzinfo=UTC))
    assert rows(target_url, "SELECT COUNT(*) FROM sync_dead_letters")[0][0] == 0
    nxt = sync(spec, mysql_url, target_url)  # nothing left behind: the next delta changes nothing
    assert (nxt.status, nxt.stats.updated, nxt.stats.created) == ("success", 0, 0)


def test_the_stale_guard_keeps_the_stored_row_and_says_so(tmp_path, mysql_url, target_url):
    """A source declared to serve out-of-date copies (as an API's search index may): the record that
    reads older than the stored row is not written, and that is never silent."""
    spec = _edited_in_the_repeated_hour(tmp_path, mysql_url, target_url, "  serves_stale_copies: true\n")
    preview = sync(spec, mysql_url, target_url, dry_run=True)
    assert (preview.stats.updated, preview.stats.stale, preview.stats.failed) == (0, 1, 1)
    again = sync(spec, mysql_url, target_url)
    assert (again.status, again.stats.updated, again.stats.stale, again.stats.failed) == ("partial", 0, 1, 1)
    assert _stored(target_url, "items", 10)[0] == "item 10"
    h = history(target_url)[-1]
    assert (h.status, h.records_failed) == ("partial", 1)
    (key, field, reason, raw), = rows(target_url, "SELECT record_key, field, reason, raw_record FROM sync_dead_letters")
    assert (key, field) == ("10", "updated_at")
    assert "older than the stored row" in reason and "2025-11-02T05:59:59" in reason
    assert "edited in the second pass" in raw
    forced = sync(spec, mysql_url, target_url, force=True)
    assert (forced.status, forced.stats.updated) == ("success", 1)
    assert _stored(target_url, "items", 10)[0] == "edited in the second pass"


def test_http_sources_default_to_the_stale_guard_sql_and_file_sources_do_not():
    specs = Path(__file__).resolve().parent.parent / "specs"
    env = {"HUBSPOT_TOKEN": "x", "GENIUS_DB_URL": "sqlite://", "CALLRAIL_API_KEY": "x", "CALLRAIL_ACCOUNT_ID": "1"}
    assert load_spec(specs / "hubspot" / "contacts.yaml", env).source.serves_stale_copies is True
    assert load_spec(specs / "genius" / "appointments.yaml", env).source.serves_stale_copies is False


def test_the_stale_guard_without_a_cursor_is_a_lint_error(tmp_path):
    from syncrunner.spec.load import check_spec
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("  cursor: updated_at\n", "  serves_stale_copies: true\n"))
    _, problems = check_spec(spec, {"ITEM_DB_URL": "mysql+pymysql://x@h/db"})
    assert [(p.line, p.key) for p in problems if "needs source.cursor" in p.message] == \
        [(7, "source.serves_stale_copies")], problems


class SearchIndex(FakeAPI):
    """A tiny API over real loopback HTTP whose listing may lag behind its records: `items` is what
    the index serves at the moment (a test swaps in an out-of-date copy)."""

    items: list[dict] = []

    def routes(self):
        return [route("GET", "/items", lambda req: Response(200, {"items": self.items}))]

    def is_authorized(self, req: Request) -> bool:
        return True


INDEX_SPEC = """\
crm: test
entity: indexed
source:
  kind: http
  base_url: {base}
  request: {{path: /items}}
  records: items
  cursor: updated
  key: id
{extra}target: {{table: indexed, key: [id]}}
fields:
  id: {{type: integer, required: true}}
  name: {{type: string}}
  updated: {{type: datetime}}
"""


@pytest.mark.parametrize("declared", [None, False], ids=["http-default", "declared-false"])
def test_an_http_source_keeps_out_an_out_of_date_copy_by_default_and_says_so(tmp_path, target_url, declared):
    with SearchIndex() as api:
        extra = "" if declared is None else f"  serves_stale_copies: {str(declared).lower()}\n"
        (tmp_path / "s.yaml").write_text(INDEX_SPEC.format(base=api.base_url, extra=extra))
        spec = load_spec(tmp_path / "s.yaml", {})
        api.items = [{"id": 1, "name": "current", "updated": "2025-06-02T10:00:00Z"},
                     {"id": 2, "name": "two", "updated": "2025-06-02T10:00:00Z"}]
        assert run_spec(spec, RunOptions(full=True), target_url).status == "success"
        api.items = [{"id": 1, "name": "out-of-date copy", "updated": "2025-06-01T10:00:00Z"},
                     {"id": 2, "name": "two", "updated": "2025-06-02T10:00:00Z"}]
        again = run_spec(spec, RunOptions(full=True), target_url)
    name = rows(target_url, "SELECT name FROM indexed WHERE id = 1")[0][0]
    dead = rows(target_url, "SELECT record_key, field, reason FROM sync_dead_letters")
    if declared is None:  # http: the guard is on
        assert (again.status, again.stats.stale, again.stats.failed, again.stats.unchanged) == ("partial", 1, 1, 1)
        assert name == "current"
        assert [(k, f) for k, f, _ in dead] == [("1", "updated")] and "older than the stored row" in dead[0][2]
    else:
        assert (again.status, again.stats.updated, again.stats.stale) == ("success", 1, 0)
        assert name == "out-of-date copy" and dead == []
