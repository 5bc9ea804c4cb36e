"""Progress: one log line per chunk when not on a terminal, a tqdm bar on one; JSON log lines;
--debug shows the SQL."""
from __future__ import annotations

import io
import json
import logging

from click.testing import CliRunner

from syncrunner.cli import main
from syncrunner.ops.progress import ProgressObserver, chunk_line
from syncrunner.runtime.engine import run_spec
from syncrunner.runtime.strategy import RunOptions
from syncrunner.spec.load import load_spec
from tests.helpers import make_source, write_spec


def test_chunk_line_format():
    assert chunk_line("genius.appointments", 23, 23_000, 54_000, 1000, 23_000 / 11_200) == \
        "genius.appointments chunk 23/54: 23,000/54,000 (42.6%) 11,200 rec/s, ETA 0:03"
    assert chunk_line("x.y", 2, 2000, None, 1000, 0.5) == "x.y chunk 2: 2,000 records, 4,000 rec/s"
    # more rows than counted (changed during the run): never "chunk 4/3"
    assert chunk_line("x.y", 4, 3100, 2500, 1000, 1.0).startswith("x.y chunk 4/4: 3,100/2,500 (124.0%)")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(tmp_path, url, target, observers, count_total=True, **opts):
    spec = load_spec(write_spec(tmp_path), {"ITEM_DB_URL": url})
    return run_spec(spec, RunOptions(**opts), target, observers=observers, count_total=count_total)


def test_non_terminal_logs_one_line_per_chunk_with_total(tmp_path, pg_url, sqlite_url, caplog):
    make_source(pg_url, 2500)
    stream = io.StringIO()
    with caplog.at_level(logging.INFO, logger="syncrunner"):
        result = _run(tmp_path, pg_url, sqlite_url, [ProgressObserver(stream)])
    assert result.status == "success"
    lines = [r.getMessage() for r in caplog.records if r.name == "syncrunner.progress"]
    assert [line.split(" rec/s")[0].rsplit(" ", 1)[0] for line in lines] == [
        "testcrm.items chunk 1/3: 1,000/2,500 (40.0%)",
        "testcrm.items chunk 2/3: 2,000/2,500 (80.0%)",
        "testcrm.items chunk 3/3: 2,500/2,500 (100.0%)",
    ]
    assert stream.getvalue() == ""  # no bar, no terminal codes
    starting = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Starting")]
    assert starting and "with 2,500 records" in starting[0]


def test_without_count_lines_have_no_total(tmp_path, mysql_url, sqlite_url, caplog):
    make_source(mysql_url, 1500)
    with caplog.at_level(logging.INFO, logger="syncrunner"):
        _run(tmp_path, mysql_url, sqlite_url, [ProgressObserver(io.StringIO())], count_total=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "syncrunner.progress"]
    assert lines[0].startswith("testcrm.items chunk 1: 1,000 records, ") and len(lines) == 2


def test_terminal_gets_a_bar_and_no_chunk_lines(tmp_path, pg_url, sqlite_url, caplog):
    make_source(pg_url, 2500)
    tty = _Tty()
    with caplog.at_level(logging.INFO, logger="syncrunner"):
        _run(tmp_path, pg_url, sqlite_url, [ProgressObserver(tty)])
    out = tty.getvalue()
    assert "testcrm.items" in out and "100%" in out and "2.50k/2.50k" in out and "rec/s" in out
    assert not [r for r in caplog.records if r.name == "syncrunner.progress"]


def test_dry_run_counts_too(tmp_path, sqlite_url, caplog):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    make_source(src, 1200)
    with caplog.at_level(logging.INFO, logger="syncrunner"):
        _run(tmp_path, src, sqlite_url, [ProgressObserver(io.StringIO())], dry_run=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "syncrunner.progress"]
    assert lines[-1].startswith("testcrm.items chunk 2/2: 1,200/1,200 (100.0%)")


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def test_cli_progress_lines_json_logs_and_no_progress(tmp_path, sqlite_url):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    make_source(src, 2100)
    spec = write_spec(tmp_path)
    env = {"ITEM_DB_URL": src}
    res = invoke("run", spec, "--target", sqlite_url, "--full", "--log-format", "json", "--count", env=env)
    assert res.exit_code == 0, res.output
    docs = [json.loads(line) for line in res.stderr.splitlines()]
    assert {"ts", "level", "logger", "message"} <= set(docs[0])
    messages = [d["message"] for d in docs]
    assert any(m.startswith("testcrm.items chunk 3/3: 2,100/2,100 (100.0%)") for m in messages)
    assert any(m.startswith("Completed testcrm items sync: 2100 created, 0 updated, 0 failed") for m in messages)

    quiet = invoke("run", spec, "--target", sqlite_url, "--full", "--no-progress", env=env)
    assert quiet.exit_code == 0
    assert " chunk " not in quiet.stderr
    assert "with unknown records" in quiet.stderr  # no COUNT query without --count

    uncounted = invoke("run", spec, "--target", sqlite_url, "--full", env=env)  # the default: no COUNT on the source
    assert uncounted.exit_code == 0
    assert "with unknown records" in uncounted.stderr and " chunk " in uncounted.stderr


def test_debug_logs_the_source_sql(tmp_path, sqlite_url):
    src = f"sqlite:///{tmp_path / 'src.db'}"
    make_source(src, 10)
    res = invoke("run", write_spec(tmp_path), "--target", sqlite_url, "--debug", env={"ITEM_DB_URL": src})
    assert res.exit_code == 0
    assert "DEBUG SQL on sqlite:///" in res.stderr
    assert "SELECT * FROM (SELECT id, name, email, amount, seen_on, updated_at FROM item) src" in res.stderr
    plain = invoke("run", write_spec(tmp_path), "--target", sqlite_url, env={"ITEM_DB_URL": src})
    assert "DEBUG" not in plain.stderr
