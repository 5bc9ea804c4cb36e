"""The Genius source fixture on MariaDB and SQLite, and every Genius spec's query against it."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from jinja2 import meta

from syncrunner.core.templating import ENV, compile_expression, render_sql
from syncrunner.fixtures import genius
from syncrunner.spec.load import load_spec

SIZE = 300
SPECS = sorted((Path(__file__).resolve().parent.parent / "specs" / "genius").glob("*.yaml"))
ZERO = genius.ZERO_DATETIME


@pytest.fixture(params=["mysql", "sqlite"])
def source_url(request) -> str:
    return request.getfixturevalue({"mysql": "mysql_url", "sqlite": "sqlite_url"}[request.param])


@pytest.fixture
def engine(source_url):
    eng = sa.create_engine(source_url)
    genius.create_schema(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def populated(engine):
    return engine, genius.populate(engine, size=SIZE, seed=7)


def _table(name: str) -> sa.Table:
    return genius.METADATA.tables[name]


def _count(conn: sa.Connection, table: str, where=None) -> int:
    q = sa.select(sa.func.count()).select_from(_table(table))
    return conn.execute(q if where is None else q.where(where)).scalar()


def test_twenty_tables_and_counts_as_reported(populated):
    engine, counts = populated
    assert len(genius.TABLES) == 20 and len(SPECS) == 20
    assert counts == genius.row_counts(SIZE)
    assert counts["appointment"] == SIZE and counts["appointment_service"] == SIZE * 3 // 2
    assert counts["user_title"] == 10  # lookups do not scale
    with engine.connect() as c:
        assert {t: _count(c, t) for t in counts} == counts


def test_appointment_has_the_columns_the_spec_reads(engine):
    cols = [c["name"] for c in sa.inspect(engine).get_columns("appointment")]
    assert cols == ["id", "prospect_id", "user_id", "type_id", "date", "time", "duration", "address1", "city",
                    "state", "zip", "email", "complete", "cancel_reason", "notes", "add_user_id", "added_on",
                    "updated_at"]
    indexes = {tuple(i["column_names"]) for i in sa.inspect(engine).get_indexes("appointment")}
    assert ("updated_at", "id") in indexes
    assert ("added_on", "id") in {tuple(i["column_names"]) for i in sa.inspect(engine).get_indexes("lead")}


def test_foreign_keys_consistent(populated):
    engine, _ = populated
    refs = genius.foreign_keys()
    assert ("appointment", "prospect_id", "prospect") in refs and len(refs) > 30
    with engine.connect() as c:
        for table, col, parent in refs:
            t, p = _table(table), _table(parent)
            pk = p.c[genius.TABLE_BY_NAME[parent].pk[0]]
            orphan = t.c[col].is_not(None) & ~sa.exists().where(pk == t.c[col])
            assert _count(c, table, orphan) == 0, f"{table}.{col} points outside {parent}"


def test_realistic_junk_present(populated):
    engine, counts = populated
    with engine.connect() as c:
        def n(table: str, where: str) -> int:
            return c.execute(sa.text(f"SELECT COUNT(*) FROM {table} WHERE {where}")).scalar()

        # zero dates: MariaDB stores real zero dates, SQLite their text; same query on both
        assert n("prospect", f"added_on = '{ZERO}'") == SIZE // 200 + (SIZE % 200 >= 37)
        assert n("job_change_order", f"approved_on = '{ZERO}'") > 0
        assert n("appointment", f"updated_at = '{ZERO}' OR updated_at IS NULL") == 0
        assert n("quote", "updated_at IS NULL") > 0 and n("quote", f"updated_at = '{ZERO}'") > 0
        # bulk imports: many rows share one updated_at, incl. a nonexistent DST time in New York
        assert n("appointment", "updated_at = '2024-03-10 02:30:00'") >= 5
        assert n("prospect", "is_address_valid = 2") == 1
        assert n("prospect", "email IS NULL") > 0 and n("prospect", "email NOT LIKE '%@%.%'") > 0
        assert any("\n" in (r[0] or "") for r in c.execute(sa.text("SELECT notes FROM prospect")))
        names = {r[0] for r in c.execute(sa.text("SELECT last_name FROM prospect"))}
        assert {"Müller", "Peña", "O'Brien"} <= names  # latin1 accents survive the round trip
        if engine.dialect.name != "sqlite":
            coll = dict(c.execute(sa.text(
                "SELECT TABLE_NAME, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()")).all())
            assert coll["prospect"].startswith("latin1") and coll["appointment"].startswith("latin1")
            assert coll["job_change_order_item"].startswith("utf8mb4")
            assert c.execute(sa.text("SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
                                     " AND TABLE_NAME = 'appointment' AND COLUMN_NAME = 'complete'")).scalar() == "tinyint(1)"


def test_deterministic_by_seed(populated):
    engine, counts = populated
    first = genius.checksum(engine)
    genius.drop_schema(engine)
    genius.create_schema(engine)
    assert genius.populate(engine, size=SIZE, seed=7) == counts
    assert genius.checksum(engine) == first
    genius.drop_schema(engine)
    genius.create_schema(engine)
    genius.populate(engine, size=SIZE, seed=8)
    assert genius.checksum(engine) != first


def test_mutate_changes_the_reported_rows(populated):
    engine, counts = populated
    now = datetime(2025, 6, 1, 9, 30, 15, 123456)
    stamp = "2025-06-01 09:30:15"
    out = genius.mutate(engine, fraction=0.1, seed=3, now=now)
    assert out["prospect.updated"] == round(SIZE * 0.1) and out["lead.inserted"] == round(SIZE * 0.1 / 5)
    assert out["appointment_service.deleted"] > 0
    with engine.connect() as c:
        for td in genius.TABLES:
            if td.cursor is None:
                continue
            changed = out.get(f"{td.name}.updated", 0) + out.get(f"{td.name}.inserted", 0)
            assert _count(c, td.name, sa.literal_column(td.cursor) == stamp) == changed, td.name
            assert _count(c, td.name) == (counts[td.name] + out.get(f"{td.name}.inserted", 0)
                                          - out.get(f"{td.name}.deleted", 0)), td.name
    test_foreign_keys_consistent((engine, counts))


def _source_names(spec) -> set[str]:
    """Source columns a spec needs: every `from`, every variable of an `expr`, the key and the cursor."""
    names = set(spec.source.key) | ({spec.source.cursor} if spec.source.cursor else set())
    for f in spec.fields.values():
        if f.expr is not None:
            names |= meta.find_undeclared_variables(ENV.parse("{{ " + f.expr + " }}")) - set(ENV.globals)
        else:
            names.add(f.source_path or f.name)
    return names


def test_every_spec_query_runs_and_returns_its_fields(populated, source_url):
    engine, counts = populated
    problems = []
    with engine.connect() as c:
        for path in SPECS:
            spec = load_spec(path, env={"GENIUS_DB_URL": source_url})
            assert spec.crm == "genius" and spec.target.table == f"genius_{spec.entity}"
            result = c.execute(sa.text(render_sql(spec.source.options["query"], windowed=False)))
            columns, rows = set(result.keys()), result.mappings().all()
            if missing := _source_names(spec) - columns:
                problems.append(f"{path.name}: query lacks {sorted(missing)}")
            table = spec.source.options["query"].split("FROM")[1].split()[0]
            if len(rows) != counts[table]:
                problems.append(f"{path.name}: {len(rows)} rows, {table} has {counts[table]}")
            exprs = {n: compile_expression(f.expr) for n, f in spec.fields.items() if f.expr}
            for row in rows:  # expressions must evaluate on every real row
                for name, fn in exprs.items():
                    try:
                        fn(**row)
                    except Exception as e:  # noqa: BLE001 - report, keep checking
                        problems.append(f"{path.name}: {name} fails on {dict(row)}: {e}")
                        break
    assert not problems, "\n".join(problems)


def test_cursor_choice_matches_the_reference():
    by_entity = {load_spec(p, env={"GENIUS_DB_URL": "sqlite://"}).entity: load_spec(p, env={"GENIUS_DB_URL": "sqlite://"})
                 for p in SPECS}
    for entity in ("appointments", "divisions", "users", "prospects", "quotes", "services"):
        assert by_entity[entity].source.cursor == "updated_at"
    assert by_entity["leads"].source.cursor == "added_on"
    for spec in by_entity.values():
        if spec.source.cursor is None:
            assert spec.deletes.mode == "sweep", spec.entity
        assert set(spec.after) <= set(by_entity), spec.entity


def test_cli_creates_and_populates(sqlite_url, capsys):
    assert genius.main(["--url", sqlite_url, "--size", "50"]) == 0
    assert "appointment " in capsys.readouterr().out
    eng = sa.create_engine(sqlite_url)
    with eng.connect() as c:
        assert _count(c, "appointment") == 50
    eng.dispose()
