"""`syncrunner history` and `syncrunner health` over real SyncHistory rows in PostgreSQL and SQLite:
tables, JSON, filters, and health's exit codes for healthy and unhealthy sources."""
from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from syncrunner.cli import main
from syncrunner.dburl import create_engine
from syncrunner.runtime import history as h
from tests.helpers import ITEM_SPEC, item, make_source, write_spec

BROKEN_SPEC = ITEM_SPEC.format(chunk_size=1000, batch_size=500, entity="broken", table="broken") \
    .replace("${ITEM_DB_URL}", "${BROKEN_DB_URL}")


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture(params=["pg_url", "sqlite_url"])
def target(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def runs(tmp_path, target):
    """items: success, success, partial; broken: failed twice. Returns (target, env, spec paths)."""
    src_url = f"sqlite:///{tmp_path / 'src.db'}"
    src = make_source(src_url, 30)
    env = {"ITEM_DB_URL": src_url, "BROKEN_DB_URL": "mysql+pymysql://root@127.0.0.1:1/nowhere"}
    items = write_spec(tmp_path)
    broken = write_spec(tmp_path, text=BROKEN_SPEC, name="broken.yaml")
    for args in ([items], [items, "--full"], [broken], [broken]):
        invoke("run", *args, "--target", target, env=env)
    with src.begin() as c:
        c.execute(item.update().where(item.c.id == 3).values(email="not-an-email", updated_at=sa.func.now()))
    assert invoke("run", items, "--target", target, env=env).exit_code == 3
    src.dispose()
    return target, env, tmp_path


def _shift(target: str, entity: str, hours: float) -> None:
    """Move an entity's runs into the past, as if they had run `hours` ago."""
    engine = create_engine(target)
    with engine.begin() as c:
        for r in c.execute(sa.select(h.sync_history).where(h.sync_history.c.sync_type == entity)).fetchall():
            delta = dt.timedelta(hours=hours)
            c.execute(h.sync_history.update().where(h.sync_history.c.id == r.id).values(
                start_time=r.start_time - delta, end_time=r.end_time - delta if r.end_time else None,
                heartbeat_at=r.heartbeat_at - delta if r.heartbeat_at else None))
    engine.dispose()


def test_history_table_filters_and_json(runs):
    target, env, _ = runs
    res = invoke("history", "--target", target)
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert lines[0].split() == ["id", "source", "status", "started", "(UTC)", "window", "processed", "created",
                                "updated", "failed", "seconds", "rec/s", "error"]
    assert len(lines) == 1 + 5
    assert lines[1].split()[1:3] == ["testcrm.items", "partial"]          # newest first
    assert "OperationalError" in res.output                               # the failed runs' error
    assert any(line.split()[1:3] == ["testcrm.items", "success"] and " full " in line for line in lines)

    failed = invoke("history", "--target", target, "--status", "failed", "--json")
    docs = json.loads(failed.output)
    assert [d["status"] for d in docs] == ["failed", "failed"] and {d["entity"] for d in docs} == {"broken"}
    assert {"id", "crm", "entity", "status", "start_time", "end_time", "window_mode", "processed", "created",
            "updated", "failed", "duration_seconds", "records_per_second", "error"} <= set(docs[0])

    first = json.loads(invoke("history", "--target", target, "--entity", "testcrm.items", "--limit", "1",
                              "--json").output)
    assert len(first) == 1 and first[0]["status"] == "partial" and first[0]["failed"] == 1
    all_items = json.loads(invoke("history", "--target", target, "--crm", "testcrm", "--entity", "items",
                                  "--json").output)
    assert [d["status"] for d in all_items] == ["partial", "success", "success"]
    assert all_items[2]["created"] == 30 and all_items[2]["duration_seconds"] > 0


def test_health_exit_codes_healthy_and_unhealthy(runs):
    target, env, _ = runs
    every = invoke("health", "--target", target)
    assert every.exit_code == 1
    table = {line.split()[0]: line for line in every.output.splitlines()[1:-1]}
    assert "UNHEALTHY" in table["testcrm.broken"] and "never succeeded" in table["testcrm.broken"]
    assert "success rate 0% < 80%" in table["testcrm.broken"]
    # items: 2 successes + 1 partial = 67%: partial is finished but not a success...
    assert "success rate 67% < 80%" in table["testcrm.items"]
    assert every.output.splitlines()[-1].startswith("2 source(s), 2 unhealthy")
    # ...unless partial runs are acceptable, or the threshold is lower
    assert invoke("health", "--target", target, "--entity", "items", "--partial-ok").exit_code == 0
    ok = invoke("health", "--target", target, "--entity", "testcrm.items", "--min-success-rate", "0.6")
    assert ok.exit_code == 0 and "OK" in ok.output and "0 unhealthy" in ok.output
    assert invoke("health", "--target", target, "--entity", "broken").exit_code == 1

    doc = json.loads(invoke("health", "--target", target, "--json", "--partial-ok").output)
    assert doc["healthy"] is False and doc["policy"]["partial_ok"] is True
    by = {s["source"]: s for s in doc["sources"]}
    assert (by["testcrm.items"]["runs"], by["testcrm.items"]["success"], by["testcrm.items"]["partial"]) == (3, 2, 1)
    assert by["testcrm.items"]["healthy"] is True and by["testcrm.items"]["success_rate"] == 1.0
    assert by["testcrm.items"]["last_success_age_hours"] < 0.1
    assert by["testcrm.broken"]["healthy"] is False and by["testcrm.broken"]["failed"] == 2

    per_crm = json.loads(invoke("health", "--target", target, "--by", "crm", "--json").output)
    assert [s["source"] for s in per_crm["sources"]] == ["testcrm"] and per_crm["sources"][0]["runs"] == 5


def test_health_stale_source_and_dead_running_run(runs):
    target, env, _ = runs
    _shift(target, "items", 30)
    stale = invoke("health", "--target", target, "--entity", "items", "--partial-ok")
    assert stale.exit_code == 1
    assert "no finished run in the last 24h" in stale.output and "last success 30.0h ago > 24h" in stale.output
    assert invoke("health", "--target", target, "--entity", "items", "--partial-ok", "--hours", "48").exit_code == 0
    assert invoke("health", "--target", target, "--entity", "items", "--partial-ok", "--hours", "48",
                  "--max-age-hours", "12").exit_code == 1

    # a run that died leaves `running`; once its heartbeat is stale it counts as failed
    engine = create_engine(target)
    with engine.begin() as c:
        run_id = h.start_run(c, "testcrm", "items", {})
        c.execute(h.sync_history.update().where(h.sync_history.c.id == run_id).values(
            heartbeat_at=h.utcnow() - dt.timedelta(hours=2)))
    engine.dispose()
    doc = json.loads(invoke("health", "--target", target, "--entity", "items", "--hours", "48", "--json",
                            "--partial-ok").output)
    s = doc["sources"][0]
    assert (s["runs"], s["failed"], s["running"]) == (4, 1, 0)
    fresh = json.loads(invoke("health", "--target", target, "--entity", "items", "--hours", "48", "--json",
                              "--partial-ok", "--stale-minutes", "600").output)["sources"][0]
    assert (fresh["runs"], fresh["running"]) == (3, 1)


def test_health_expects_the_specs_given(runs):
    target, env, tmp_path = runs
    never = write_spec(tmp_path, chunk_size=10, batch_size=10, entity="never_ran", table="items",
                       name="never.yaml")
    res = invoke("health", never, "--target", target, "--json")
    doc = json.loads(res.output)
    assert res.exit_code == 1
    assert [s["source"] for s in doc["sources"]] == ["testcrm.never_ran"]  # only what the specs name
    assert doc["sources"][0]["problems"] == ["no finished run in the last 24h", "never succeeded"]
    items = invoke("health", tmp_path / "items.yaml", "--target", target, "--partial-ok")
    assert items.exit_code == 0 and "testcrm.broken" not in items.output


def test_no_history_yet(tmp_path):
    target = f"sqlite:///{tmp_path / 'empty.db'}"
    res = invoke("health", "--target", target)
    assert res.exit_code == 1 and "no SyncHistory" in res.output
    hist = invoke("history", "--target", target, "--json")
    assert hist.exit_code == 0 and json.loads(hist.stdout) == []
    assert not (tmp_path / "empty.db").exists()  # looking did not create the database
