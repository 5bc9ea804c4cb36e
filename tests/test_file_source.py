"""The file source: CSV and JSON Lines from a path or glob, the same mapping and validation as any
source, bad rows into sync_dead_letters, the window applied client-side on the cursor."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from syncrunner.runtime.engine import run_spec
from syncrunner.runtime.strategy import RunOptions
from syncrunner.spec.load import load_spec
from syncrunner.spec.model import SpecError
from tests.helpers import history, rows

SPEC = """\
crm: files
entity: people
source:
  kind: file
  path: ${{PEOPLE_FILES}}
  format: {format}
{extra}  cursor: updated_at
  key: id
  chunk_size: 4
target: {{table: people, key: [id]}}
fields:
  id:         {{from: id, type: integer, required: true}}
  name:       {{from: name, type: string, required: true}}
  amount:     {{from: amount, type: decimal, precision: 10, scale: 2}}
  updated_at: {{from: updated_at, type: datetime, required: true}}
"""

CSV = """\
id,name,amount,updated_at
1,Ana,10.50,2025-01-01T10:00:00Z
2,Ben,oops,2025-01-02T10:00:00Z
3,Chloé,3,2025-01-03T10:00:00Z
4,Dmitri,4,2025-01-04T10:00:00Z,extra-cell
5,"Eve, Jr.",5.25,2025-01-05T10:00:00Z
6,Farah,6,2025-01-06T10:00:00Z
"""


@pytest.fixture(params=["postgresql", "sqlite"])
def target(request) -> str:
    return request.getfixturevalue({"postgresql": "pg_url", "sqlite": "sqlite_url"}[request.param])


def spec_for(tmp_path: Path, files: str, fmt: str = "csv", extra: str = ""):
    path = tmp_path / "people.yaml"
    path.write_text(SPEC.format(format=fmt, extra=extra))
    return load_spec(path, {"PEOPLE_FILES": files})


def test_csv_bad_rows_go_to_dead_letters_the_rest_land(tmp_path, target):
    (tmp_path / "people.csv").write_text(CSV, encoding="utf-8")
    result = run_spec(spec_for(tmp_path, str(tmp_path / "people.csv")), RunOptions(), target)
    assert result.status == "partial"
    assert (result.stats.fetched, result.stats.created, result.stats.failed) == (6, 4, 2)
    got = rows(target, "SELECT id, name, amount FROM people ORDER BY id")
    assert [(r[0], r[1], float(r[2])) for r in got] == [
        (1, "Ana", 10.5), (3, "Chloé", 3.0), (5, "Eve, Jr.", 5.25), (6, "Farah", 6.0)]
    dead = rows(target, "SELECT record_key, field, reason, raw_record FROM sync_dead_letters ORDER BY id")
    assert dead[0][0] == "2" and dead[0][1] == "amount" and "not a number" in dead[0][2]
    assert "line 5: 5 cells, expected 4" in dead[1][2] and "extra-cell" in dead[1][3]
    assert history(target)[-1].status == "partial"


def test_jsonl_glob_window_and_bad_line(tmp_path, sqlite_url):
    d = tmp_path / "export"
    d.mkdir()
    recs = [{"id": i, "name": f"p{i}", "amount": i, "updated_at": f"2025-02-{i:02d}T00:00:00+00:00"}
            for i in range(1, 11)]
    (d / "part-1.jsonl").write_text("\n".join(json.dumps(r) for r in recs[:5]) + "\n\n{not json\n")
    (d / "part-2.jsonl").write_text("\n".join(json.dumps(r) for r in recs[5:]) + "\n[1, 2]\n")
    spec = spec_for(tmp_path, str(d / "part-*.jsonl"), "jsonl")
    full = run_spec(spec, RunOptions(), sqlite_url)
    assert (full.status, full.stats.created, full.stats.failed) == ("partial", 10, 2)
    reasons = [r[0] for r in rows(sqlite_url, "SELECT reason FROM sync_dead_letters ORDER BY id")]
    assert "part-1.jsonl line 7: not JSON" in reasons[0] and "part-2.jsonl line 6: not a JSON object" in reasons[1]
    windowed = run_spec(spec, RunOptions(start_date="2025-02-08"), sqlite_url)
    assert windowed.stats.fetched == 3 + 2  # the rows in the window, plus the unparseable lines
    assert windowed.watermark.startswith("2025-02-10")


def test_csv_options_delimiter_encoding_no_header(tmp_path, sqlite_url):
    text = "1;Müller;1,5;2025-03-01 08:00:00\n2;Åsa;2;2025-03-02 08:00:00\n"
    (tmp_path / "p.csv").write_bytes(text.encode("latin-1"))
    extra = "  delimiter: ';'\n  encoding: latin-1\n  header: false\n  columns: [id, name, amount, updated_at]\n"
    result = run_spec(spec_for(tmp_path, str(tmp_path / "p.csv"), extra=extra), RunOptions(), sqlite_url)
    assert result.status == "success", result.error
    assert [r[0] for r in rows(sqlite_url, "SELECT name FROM people ORDER BY id")] == ["Müller", "Åsa"]


def test_header_false_needs_columns(tmp_path):
    with pytest.raises(SpecError, match="columns"):
        spec_for(tmp_path, "x.csv", extra="  header: false\n")


def test_no_matching_file_fails_clearly(tmp_path, sqlite_url):
    result = run_spec(spec_for(tmp_path, str(tmp_path / "missing-*.csv")), RunOptions(), sqlite_url)
    assert result.status == "failed" and "no file matches" in result.error


def test_bad_records_without_a_key_are_kept_once_across_full_runs(tmp_path, target_url):
    """Issue 21.8: a bad record whose key is missing is matched by its raw record, as a keyed one is
    by its key: kept once, and counted as known bad (not a new failure) when read again."""
    recs = [{"id": i, "name": f"p{i}", "amount": i, "updated_at": f"2025-02-{i:02d}T00:00:00+00:00"}
            for i in range(1, 6)]
    recs += [{"id": None, "name": "no key", "amount": 1, "updated_at": "2025-02-06T00:00:00+00:00"},
             {"name": "no key either", "amount": 2, "updated_at": "2025-02-07T00:00:00+00:00"}]
    (tmp_path / "people.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    spec = spec_for(tmp_path, str(tmp_path / "people.jsonl"), "jsonl")
    first = run_spec(spec, RunOptions(full=True), target_url)
    assert (first.status, first.stats.created, first.stats.failed, first.stats.known_bad) == ("partial", 5, 2, 0)
    for _ in range(2):
        again = run_spec(spec, RunOptions(full=True), target_url)
        assert (again.stats.fetched, again.stats.failed, again.stats.known_bad) == (7, 0, 2)
        assert again.status == "success"  # as for known-bad records with a key: nothing new failed
        h = history(target_url)[-1]
        metrics = json.loads(h.performance_metrics) if isinstance(h.performance_metrics, str) else h.performance_metrics
        assert (h.records_failed, metrics["records_known_bad"]) == (0, 2)
        dead = rows(target_url, "SELECT record_key, reason FROM sync_dead_letters ORDER BY id")
        assert len(dead) == 2 and all(k is None for k, _ in dead), dead
