"""Generic HTTP source abilities found missing by writing specs for never-seen APIs from their docs
(issue 24): offset and page listings that stop on the body's "more items" flag and take the next
start from the body, and records delivered as an object keyed by id. Real loopback HTTP against
small in-process APIs, real SQLite/PostgreSQL targets."""
from __future__ import annotations

from pathlib import Path

import pytest

from syncrunner.runtime.engine import RunResult, run_spec
from syncrunner.runtime.strategy import RunOptions
from syncrunner.spec.load import check_spec, load_spec
from tests.fakes.server import FakeAPI, Request, Response, route
from tests.helpers import rows

ITEMS = [{"id": i, "name": f"item {i}", "update_time": f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}Z"}
         for i in range(1, 101)]


class MoreAPI(FakeAPI):
    """100 items behind two listings that give no count, only a "more" flag:

    `/deals?start=&limit=` Pipedrive style: `additional_data.pagination.{more_items_in_collection,
    next_start}`; items whose id is a multiple of 10 are private and left out of the page, yet
    counted in next_start (so counting the records received would go wrong).
    `/leads?page=&perPage=` SalesRabbit style: `meta.morePages`, false on a full last page."""

    def routes(self):
        return [route("GET", "/deals", self._deals), route("GET", "/leads", self._leads),
                route("GET", "/histories", self._histories)]

    def _deals(self, req: Request) -> Response:
        start, limit = int(req.arg("start") or 0), int(req.arg("limit") or 100)
        window = ITEMS[start:start + limit]
        more = start + limit < len(ITEMS)
        pagination = {"start": start, "limit": limit, "more_items_in_collection": more}
        if more:
            pagination["next_start"] = start + limit
        return Response(200, {"success": True, "data": [i for i in window if i["id"] % 10],
                              "additional_data": {"pagination": pagination}})

    def _leads(self, req: Request) -> Response:
        page, per_page = int(req.arg("page")), int(req.arg("perPage"))
        return Response(200, {"data": ITEMS[(page - 1) * per_page:page * per_page],
                              "meta": {"morePages": page * per_page < len(ITEMS)}})


    def _histories(self, req: Request) -> Response:
        """Lead id -> that lead's status changes, 10 leads a page; an empty page's object is `[]`."""
        page = int(req.arg("page"))
        leads = ITEMS[(page - 1) * 10:page * 10]
        data = {str(i["id"]): [{"id": 200 + n, "name": f"status {n}"} for n in range(i["id"] % 3 + 1)]
                for i in leads}
        return Response(200, {"data": data or [], "meta": {"morePages": page < 10}})


SPEC = """\
crm: test
entity: items
source:
  kind: http
  base_url: {base}
  request: {request}
  records: data
  pagination: {pagination}
  key: id
target: {{table: items, key: [id]}}
fields:
  id: {{type: integer, required: true}}
  name: {{type: string}}
"""

PIPEDRIVE = ("{path: /deals, params: {limit: 20}}",
             "{type: offset, param: start, more: additional_data.pagination.more_items_in_collection, "
             "next_start: additional_data.pagination.next_start}")
SALESRABBIT = ("{path: /leads, params: {perPage: 25}}", "{type: page, param: page, more: meta.morePages}")


@pytest.fixture
def api():
    with MoreAPI() as fake:
        yield fake


def write(tmp_path: Path, base: str, request: str, pagination: str) -> Path:
    path = tmp_path / "items.yaml"
    path.write_text(SPEC.format(base=base, request=request, pagination=pagination))
    return path


def run(path: Path, target: str) -> RunResult:
    return run_spec(load_spec(path), RunOptions(), target)


def test_offset_paging_takes_next_start_from_the_body_and_stops_on_the_more_flag(api, tmp_path, sqlite_url):
    result = run(write(tmp_path, api.base_url, *PIPEDRIVE), sqlite_url)
    assert result.status == "success", result.error
    assert result.stats.fetched == 90  # the 90 public items, none twice
    assert rows(sqlite_url, "SELECT COUNT(*), COUNT(DISTINCT id) FROM items") == [(90, 90)]
    # starts 0, 20, 40, 60, 80 from the body (not 0, 18, 36, ... from the records received), and no
    # request after the page whose flag says no more
    assert [e.query["start"] for e in api.log] == [["0"], ["20"], ["40"], ["60"], ["80"]]


def test_offset_paging_without_next_start_counts_records_and_still_stops_on_the_flag(api, tmp_path, sqlite_url):
    pagination = "{type: offset, param: start, more: additional_data.pagination.more_items_in_collection}"
    result = run(write(tmp_path, api.base_url, PIPEDRIVE[0], pagination), sqlite_url)
    assert result.status == "success", result.error
    # counting the 18 public records of each page re-reads the private-shifted tail: the API's
    # next_start is the right place to go on from, which is why the option exists
    assert [e.query["start"][0] for e in api.log][:3] == ["0", "18", "36"]
    assert rows(sqlite_url, "SELECT COUNT(DISTINCT id) FROM items") == [(90,)]


def test_page_paging_stops_on_a_false_more_pages_flag_without_an_empty_page(api, tmp_path, pg_url):
    result = run(write(tmp_path, api.base_url, *SALESRABBIT), pg_url)
    assert result.status == "success", result.error
    assert rows(pg_url, "SELECT COUNT(*), COUNT(DISTINCT id) FROM items") == [(100, 100)]
    assert [e.query["page"] for e in api.log] == [["1"], ["2"], ["3"], ["4"]]  # no 5th, empty page


@pytest.mark.parametrize("pagination,key,line", [
    ("{type: page, more: 'meta.[morePages'}", "source.pagination.more", 8),
    ("{type: offset, next_start: 'a..b'}", "source.pagination.next_start", 8),
])
def test_lint_checks_the_paging_paths_compile(tmp_path, pagination, key, line):
    spec, problems = check_spec(write(tmp_path, "http://127.0.0.1:9", SALESRABBIT[0], pagination))
    assert spec is None
    assert [(p.key, p.line) for p in problems if "not a valid jmespath" in p.message] == [(key, line)]


def test_a_more_flag_is_only_for_page_and_offset_paging(tmp_path):
    spec, problems = check_spec(write(tmp_path, "http://127.0.0.1:9", SALESRABBIT[0],
                                      "{type: cursor, next: meta.next, more: meta.morePages}"))
    assert spec is None and any(p.key.startswith("source.pagination") for p in problems), problems


HISTORY_SPEC = """\
crm: test
entity: histories
source:
  kind: http
  base_url: {base}
  request: {{path: /histories}}
  records: data
  records_by_key: {by_key}
  pagination: {{type: page, more: meta.morePages}}
  key: [lead_id, id]
target: {{table: histories, key: [lead_id, status_id]}}
fields:
  lead_id: {{type: integer, required: true}}
  status_id: {{from: id, type: integer, required: true}}
  name: {{type: string}}
"""


def test_records_keyed_by_id_become_rows_with_the_key_as_a_field(api, tmp_path, pg_url):
    path = tmp_path / "h.yaml"
    path.write_text(HISTORY_SPEC.format(base=api.base_url, by_key="{key_field: lead_id, values: lists}"))
    result = run(path, pg_url)
    assert result.status == "success", result.error
    expected = sum(i["id"] % 3 + 1 for i in ITEMS)  # each lead's 1-3 status changes
    assert result.stats.fetched == expected
    assert rows(pg_url, "SELECT COUNT(*), COUNT(DISTINCT lead_id) FROM histories") == [(expected, 100)]
    assert rows(pg_url, "SELECT status_id, name FROM histories WHERE lead_id = 5 ORDER BY status_id") == [
        (200, "status 0"), (201, "status 1"), (202, "status 2")]


def test_keyed_records_one_per_value_and_an_empty_php_array(tmp_path, sqlite_url):
    class OneEach(FakeAPI):
        def routes(self):
            return [route("GET", "/users", lambda req: Response(200, {"data": {
                "7": {"name": "Ana"}, "9": {"name": "Ben", "lead_id": "kept?"}} if req.arg("page") == "1" else [],
                "meta": {"morePages": True}}))]

    with OneEach() as one:
        path = tmp_path / "u.yaml"
        path.write_text(SPEC.format(base=one.base_url, request="{path: /users}",
                                    pagination="{type: page, more: meta.morePages}")
                        .replace("key: id", "key: lead_id\n  records_by_key: {key_field: lead_id}")
                        .replace("key: [id]", "key: [lead_id]").replace("id: {type", "lead_id: {type"))
        result = run(path, sqlite_url)
        assert result.status == "success", result.error
        # the object's key wins over a field of the same name; `[]` on page 2 is an empty page
        assert rows(sqlite_url, "SELECT lead_id, name FROM items ORDER BY lead_id") == [(7, "Ana"), (9, "Ben")]
        assert one.counters.requests == 2


def test_a_keyed_listing_that_is_not_an_object_names_the_page(api, tmp_path, sqlite_url):
    path = tmp_path / "h.yaml"
    path.write_text(HISTORY_SPEC.format(base=api.base_url, by_key="{key_field: lead_id}")
                    .replace("records: data", "records: meta"))
    result = run(path, sqlite_url)
    assert result.status == "failed"
    assert f"page 1 of GET {api.base_url}/histories?page=1: 'meta' is not a list of objects" in result.error


def test_lint_warns_when_no_field_reads_the_copied_key(api, tmp_path):
    path = tmp_path / "h.yaml"
    path.write_text(HISTORY_SPEC.format(base=api.base_url, by_key="{key_field: lead_no, values: lists}"))
    spec, problems = check_spec(path)
    assert [(p.key, p.line, p.severity) for p in problems if "no field reads it" in p.message] == [
        ("source.records_by_key.key_field", 8, "warning")]
