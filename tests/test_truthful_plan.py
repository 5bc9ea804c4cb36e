"""Issue 22 items 4 and 5: a spec naming a column its query does not return is refused with
file:line by plan, run and --dry-run; plan shows the mapping and, after a killed run, the resume
that run will make (in a few lines); --dry-run reports what a real run would write; lint explains
sorted_by_cursor without cursor, pagination without next, and an unquoted on_invalid: null."""
from __future__ import annotations

import datetime as dt
import json
import signal
import time

import sqlalchemy as sa

from syncrunner.dburl import create_engine
from syncrunner.runtime.strategy import describe_position
from syncrunner.runtime.target import target_exists
from tests.helpers import cli, cli_env, cli_start, history, item, make_source, rows, write_spec


def _line_of(spec, needle: str) -> int:
    return next(i for i, line in enumerate(spec.read_text().splitlines(), 1) if needle in line)


def test_a_name_the_query_does_not_return_is_an_error_with_file_and_line(tmp_path, mysql_url, sqlite_url):
    make_source(mysql_url, 20)
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("{from: email,", "{from: not_a_column,")
                    .replace("key: id\n", "key: ident\n").replace("{from: id,", "{from: ident,"))
    env = cli_env(mysql_url, sqlite_url)
    assert cli("lint", spec, env=env).returncode == 0      # lint cannot know the query's columns
    email_line, key_line = _line_of(spec, "not_a_column"), _line_of(spec, "key: ident")
    for args in (["plan", spec], ["run", spec], ["run", spec, "--dry-run"]):
        res = cli(*args, env=env)
        assert res.returncode == 1, (args, res.stdout, res.stderr)
        out = res.stdout + res.stderr
        assert f"{spec}:{email_line}: fields.email.from: 'not_a_column' is not a column" in out, out
        assert f"{spec}:{key_line}: source.key: 'ident' is not a column" in out, out
        assert "email" in out.split("it returns:")[1]       # the columns there are
    assert not target_exists(sqlite_url)                    # refused before the target is touched

    spec.write_text(write_spec(tmp_path).read_text().replace(
        "{from: name, type: string, required: true}", "{expr: \"coalesce(nme, email)\", type: string}"))
    res = cli("plan", spec, env=env)
    assert res.returncode == 1 and f"{spec}:{_line_of(spec, 'nme')}: fields.name.expr: 'nme'" in res.stderr


def test_plan_lists_the_mapping_column_by_column(tmp_path, mysql_url, sqlite_url):
    make_source(mysql_url, 5)
    res = cli("plan", write_spec(tmp_path), env=cli_env(mysql_url, sqlite_url))
    assert res.returncode == 0, res.stderr
    mapping = res.stdout.split("mapping (target column, type <- source):\n")[1].split("first fetch:")[0]
    lines = [line.split() for line in mapping.splitlines()]
    assert ["email", "string", "<-", "email"] in lines
    assert ["id", "integer", "<-", "id", "required", "(key)"] in lines
    assert ["updated_at", "datetime", "<-", "updated_at", "required", "(cursor)"] in lines


def test_plan_after_a_killed_run_shows_the_resume_run_will_make(tmp_path, mysql_url, sqlite_url):
    make_source(mysql_url, 40000)
    spec = write_spec(tmp_path, chunk_size=200, batch_size=200)
    env = cli_env(mysql_url, sqlite_url, SYNCRUNNER_WRITE_AHEAD="0", SYNCRUNNER_MAP_WORKERS="0")
    proc = cli_start("run", spec, "--no-progress", env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            got = rows(sqlite_url, "SELECT records_created FROM sync_history WHERE status = 'running'")
        except sa.exc.OperationalError:
            got = []
        if got and got[0][0]:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = history(sqlite_url)[-1]
    assert killed.status == "running" and 0 < killed.records_created < 40000

    plan = cli("plan", spec, env=env)
    assert plan.returncode == 0, plan.stderr
    assert "no completed SyncHistory run: fetching everything; resuming failed run" in plan.stdout
    assert f"run {killed.id} is still marked running but no process holds its lock" in plan.stdout
    assert f"resume:  run {killed.id}'s checkpoint: after phase=cursor" in plan.stdout
    assert len(plan.stdout.splitlines()) < 60

    dry = cli("run", spec, "--dry-run", "--json", env=env)
    assert json.loads(dry.stdout)["entities"][0]["records"]["processed"] == 40000 - killed.records_created
    done = cli("run", spec, env=env)
    assert done.returncode == 0, done.stderr
    last = history(sqlite_url)[-1]
    committed = history(sqlite_url)[-2].records_created   # the killed run, swept: its committed rows
    assert last.records_processed == 40000 - committed and last.records_created == 40000 - committed


def test_a_long_resume_position_is_summarised():
    keys = [[str(i)] for i in range(8091)]
    line = describe_position({"cursor": {"$dt": "2025-03-01T09:00:00+00:00"}, "keys": keys})
    assert line.startswith("cursor=2025-03-01T09:00:00+00:00, keys=8,091 values") and len(line) < 120


def test_dry_run_reports_what_a_real_run_would_do(tmp_path, mysql_url, target_url):
    src = make_source(mysql_url, 1000)
    spec = write_spec(tmp_path)
    env = cli_env(mysql_url, target_url)
    assert cli("run", spec, env=env).returncode == 0
    with src.begin() as c:  # 13 edited (3 only in updated_at), 5 new, 1 invalid
        c.execute(item.update().where(item.c.id <= 10).values(name="renamed", updated_at=sa.func.now()))
        c.execute(item.update().where(item.c.id.between(11, 13)).values(updated_at=sa.func.now()))
        c.execute(item.update().where(item.c.id == 14).values(email="bad@", updated_at=sa.func.now()))
        c.execute(item.insert(), [dict(id=i, name=f"new {i}", email=f"n{i}@example.com", amount=1,
                                       seen_on="2025-01-02", updated_at=dt.datetime(2026, 1, 1)) for i in range(2001, 2006)])
    target = create_engine(target_url)
    with target.begin() as c:  # a stored row newer than its source row: a SQL source's row is written anyway
        c.execute(sa.text("UPDATE items SET updated_at = :t WHERE id IN (20, 21)"), {"t": dt.datetime(2030, 1, 1)})
    with src.begin() as c:  # 21's source row changes too: updated (20's does not: its fingerprint says unchanged)
        c.execute(item.update().where(item.c.id == 21).values(name="older than stored"))
    target.dispose()
    before = rows(target_url, "SELECT COUNT(*) FROM sync_history")[0][0]
    dry = cli("run", spec, "--full", "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    entity = json.loads(dry.stdout)["entities"][0]
    predicted = entity["records"]
    assert rows(target_url, "SELECT COUNT(*) FROM sync_history")[0][0] == before   # nothing written
    assert "Validation warning for field 'email'" in dry.stderr
    real = cli("run", spec, "--full", "--json", env=env)
    done = json.loads(real.stdout)["entities"][0]["records"]
    keys = ("processed", "created", "updated", "unchanged", "stale", "failed")
    assert {k: predicted[k] for k in keys} == {k: done[k] for k in keys}
    assert (done["created"], done["updated"], done["stale"], done["failed"]) == (5, 14, 0, 1)
    assert f"dry run: would create 5, update 14, leave {done['unchanged']} unchanged and {done['stale']} " \
           "stale (older than stored), reject 1; 0 validation warning(s); nothing written" in entity["notes"]


HTTP_SPEC = """\
crm: api
entity: things
source:
  kind: http
  base_url: http://127.0.0.1:1
  request: {{method: GET, path: /things}}
  records: results
  pagination: {pagination}
  key: id
{extra}target: {{table: things, key: [id]}}
fields:
  id: {{from: id, type: integer, required: true}}
  email: {{from: email, type: string, on_invalid: {on_invalid}}}
"""


def test_lint_says_what_is_wrong(tmp_path):
    spec = tmp_path / "things.yaml"
    spec.write_text(HTTP_SPEC.format(pagination="{type: cursor, param: after}",
                                     extra="  sorted_by_cursor: true\n", on_invalid="null"))
    res = cli("lint", spec, env=cli_env("", ""))
    assert res.returncode == 1
    out = res.stdout + res.stderr
    assert f"{spec}:8: source.pagination: 'next' is missing (type: cursor needs it)" in out, out
    assert "unknown key 'param'" not in out
    assert f"{spec}:10: source.sorted_by_cursor: sorted_by_cursor: true needs a cursor" in out, out
    assert f'{spec}:14: fields.email.on_invalid: unquoted null is YAML for "no value": ' \
           f'write on_invalid: "null" (quoted)' in out, out
    spec.write_text(HTTP_SPEC.format(pagination="{type: cursor, next: paging.next.after}",
                                     extra="  sorted_by_cursor: false\n", on_invalid='"null"'))
    assert cli("lint", spec, env=cli_env("", "")).returncode == 0
