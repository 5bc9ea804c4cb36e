"""SalesPro end to end: `syncrunner run specs/salespro/` reads a SalesPro-shaped MariaDB
(syncrunner/fixtures/salespro.py) into PostgreSQL through the CLI: every row once, then exactly the
rows the source changed; text timestamps (cursor_format) windowed correctly; off unless enabled."""
from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from syncrunner.dburl import create_engine
from syncrunner.fixtures import salespro
from tests.helpers import cli, history, rows

SPECS = Path(__file__).resolve().parent.parent / "specs" / "salespro"
SIZE = 300
TABLES = {"offices": ("offices", "office_id"), "users": ("users", "user_object_id"),
          "customers": ("customer", "customer_id"), "estimates": ("estimate", "estimate_id"),
          "credit_applications": ("credit_applications", "credit_app_id"),
          "lead_results": ("lead_results", "estimate_id"), "payments": ("payments", "payment_id"),
          "user_activities": ("user_activity", "created_at, user_id, local_customer_uuid, activity_identifier")}


@pytest.fixture
def source(mysql_url):
    engine = create_engine(mysql_url)
    salespro.create_schema(engine)
    gen, counts = salespro.populate(engine, size=SIZE, seed=5)
    yield mysql_url, engine, gen, counts
    engine.dispose()


def env(source_url: str, **extra: str) -> dict:
    return dict(os.environ, SALESPRO_DB_URL=source_url, ENABLE_SALESPRO="true", **extra)


def run(target: str, environ: dict, *args):
    return cli("run", *args, "--target", target, "--no-progress", env=environ)


def test_folder_lands_every_row_once_then_exactly_the_changed_rows(source, pg_url):
    url, engine, gen, counts = source
    first = run(pg_url, env(url), SPECS)
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(counts) == 8 and min(counts.values()) > 0
    for entity, (table, key) in TABLES.items():
        n = counts[table]
        assert rows(pg_url, f"SELECT COUNT(*), COUNT(DISTINCT ({key})) FROM salespro_{entity}")[0] == (n, n), entity
    assert {h.status for h in history(pg_url)} == {"success"} and len(history(pg_url)) == 8

    # text timestamps and JSON text read as what they are
    uid, updated = rows(url, "SELECT user_object_id, _updated_at FROM users ORDER BY user_object_id LIMIT 1")[0]
    got = rows(pg_url, "SELECT updated_at FROM salespro_users WHERE user_object_id = :u", u=uid)[0][0]
    assert got == dt.datetime.fromisoformat(updated.replace("Z", "+00:00"))
    answers, result = rows(pg_url, "SELECT answers, appointment_result FROM salespro_lead_results LIMIT 1")[0]
    assert answers[0]["title"] == "Appointment Result" and result == answers[0]["value"]
    assert {r[0] for r in rows(pg_url, "SELECT DISTINCT appointment_result FROM salespro_lead_results")} \
        == {"Sold", "Demo Not Sold", "No Demo", "Reset"}
    # a visit's activity log shares one created_at: all of it landed
    per_stamp = rows(pg_url, "SELECT MAX(c) FROM (SELECT COUNT(*) c FROM salespro_user_activities "
                             "GROUP BY created_at) s")[0][0]
    assert per_stamp >= 2

    changed = salespro.mutate(engine, gen, dt.datetime.now(dt.timezone.utc).replace(tzinfo=None))
    second = run(pg_url, env(url), SPECS)
    assert second.returncode == 0, second.stdout + second.stderr
    for h in history(pg_url)[8:]:
        assert h.status == "success"
        assert h.records_created + h.records_updated == len(changed[TABLES[h.sync_type][0]]), h.sync_type
    by_entity = {h.sync_type: h for h in history(pg_url)[8:]}
    assert (by_entity["estimates"].records_created, by_entity["estimates"].records_updated) == (5, 5)
    assert (by_entity["users"].records_created, by_entity["users"].records_updated) == (0, 1)
    assert rows(pg_url, "SELECT last_name FROM salespro_users WHERE user_object_id = :u",
                u=sorted(changed["users"])[0])[0][0] == "Renamed"
    for entity, (table, key) in TABLES.items():
        n = rows(url, f"SELECT COUNT(*) FROM {table}")[0][0]
        assert rows(pg_url, f"SELECT COUNT(*) FROM salespro_{entity}")[0][0] == n, entity


def test_text_cursor_windows_by_time_not_by_character(source, pg_url, tmp_path):
    """users._updated_at is text (2024-05-01T13:45:12.123Z). With cursor_format the window bound is
    bound as that text and the run reads exactly the rows from the start time; without it MariaDB
    compares '2023-01-02T09:10...' with the bound '2023-01-02 13:45:00' character by character ('T'
    sorts after ' '), so every row of the start day passes."""
    url, *_ = source
    stamps = sorted(r[0] for r in rows(url, "SELECT _updated_at FROM users"))
    start = dt.datetime.fromisoformat(stamps[len(stamps) // 2][:16])  # a minute inside the day
    exact = sum(1 for s in stamps if dt.datetime.fromisoformat(s[:23]) >= start)
    as_text = sum(1 for s in stamps if s >= start.strftime("%Y-%m-%d %H:%M:%S"))
    assert as_text > exact  # the data has rows earlier on the start day
    spec = SPECS / "users.yaml"
    res = run(pg_url, env(url), spec, "--start-date", start.isoformat())
    assert res.returncode == 0, res.stdout + res.stderr
    assert rows(pg_url, "SELECT COUNT(*) FROM salespro_users")[0][0] == exact

    plain = tmp_path / "users.yaml"
    plain.write_text(spec.read_text().replace('  cursor_format: "%Y-%m-%dT%H:%M:%S.%3fZ"\n', "")
                     .replace("table: salespro_users", "table: salespro_users_plain")
                     .replace("entity: users", "entity: users_plain"))
    res = run(pg_url, env(url), plain, "--start-date", start.isoformat())
    assert res.returncode == 0, res.stdout + res.stderr
    assert rows(pg_url, "SELECT COUNT(*) FROM salespro_users_plain")[0][0] == as_text


def test_the_folder_is_off_unless_enabled(source, pg_url):
    url, *_ = source
    res = run(pg_url, dict(os.environ, SALESPRO_DB_URL=url), SPECS)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "disabled" in (res.stdout + res.stderr).lower()
    assert rows(pg_url, "SELECT to_regclass('salespro_customers') IS NULL")[0][0]


def test_fixture_is_deterministic_and_consistent(mysql_url):
    engine = create_engine(mysql_url)
    salespro.create_schema(engine)
    gen, counts = salespro.populate(engine, size=50, seed=9)
    again = salespro.Generator(50, 9)
    assert [r["office_id"] for r in again.office_rows()] == gen.offices
    orphans = rows(mysql_url, "SELECT COUNT(*) FROM estimate e LEFT JOIN customer c USING (customer_id) "
                              "WHERE c.customer_id IS NULL")[0][0]
    assert orphans == 0 and counts["customer"] == counts["estimate"] == counts["lead_results"] == 50
    forms = [json.loads(r[0]) for r in rows(mysql_url, "SELECT lead_results FROM lead_results")]
    assert all(f[0]["title"] == "Appointment Result" for f in forms)
    engine.dispose()
