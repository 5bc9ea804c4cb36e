"""Issue 3: every Genius spec syncs a Genius-shaped MariaDB into PostgreSQL; each target table matches
the source row for row (checksum), bad values are kept in the dead-letter table, a no-change run writes
nothing, and a spec added as YAML alone is picked up."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from syncrunner.cli import EXIT_OK, EXIT_PARTIAL, main
from syncrunner.core.coerce import DataError
from syncrunner.core.mapping import Mapper
from syncrunner.core.templating import render_sql
from syncrunner.dburl import create_engine
from syncrunner.fixtures import genius
from syncrunner.spec.load import find_specs, load_spec

SPECS = Path(__file__).resolve().parents[1] / "specs" / "genius"
SIZE = 1500


def _norm(v):
    if isinstance(v, dt.datetime):
        return (v if v.tzinfo else v.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc).isoformat()
    if isinstance(v, (Decimal, float)):
        return format(Decimal(str(v)).normalize(), "f")
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    if isinstance(v, dt.date):
        return v.isoformat()
    return v


def _digest(rows) -> str:
    return hashlib.sha256(repr(sorted(rows, key=repr)).encode()).hexdigest()


def expected_rows(spec, source_url):
    """The source read whole, independently of the runtime's chunking, through the spec's mapping."""
    engine = create_engine(source_url)
    with engine.connect() as c:
        records = [dict(r) for r in c.execute(sa.text(render_sql(spec.source.options["query"], False))).mappings()]
    engine.dispose()
    mapper = Mapper(spec)
    good, rejected = [], set()
    for rec in records:
        try:
            row = mapper.map(rec)
        except DataError:
            rejected.add(",".join(str(rec[k]) for k in spec.source.key))
            continue
        good.append(tuple(_norm(row[f]) for f in spec.fields))
    return good, rejected


def target_rows(spec, target_url):
    engine = create_engine(target_url)
    cols = ", ".join(spec.fields)
    with engine.connect() as c:
        rows = [tuple(_norm(v) for v in r) for r in c.execute(sa.text(f"SELECT {cols} FROM {spec.target.table}"))]
        dead = {r[0] for r in c.execute(sa.text(
            "SELECT record_key FROM sync_dead_letters WHERE sync_type = :e AND action = 'rejected'"),
            {"e": spec.entity})}
    engine.dispose()
    return rows, dead


@pytest.fixture
def genius_source(mysql_url):
    engine = create_engine(mysql_url)
    genius.create_schema(engine)
    genius.populate(engine, size=SIZE, seed=11)
    yield mysql_url, engine
    engine.dispose()


def _history(url, first_id=0):
    engine = create_engine(url)
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT * FROM sync_history WHERE id > :i ORDER BY id"), {"i": first_id}).fetchall()
    engine.dispose()
    return rows


def test_all_genius_entities_sync_mariadb_to_postgresql(genius_source, pg_url):
    source_url, _ = genius_source
    env = {"GENIUS_DB_URL": source_url}
    specs = [load_spec(p, env) for p in find_specs([str(SPECS)])]
    assert len(specs) == 20

    first = CliRunner().invoke(main, ["run", str(SPECS), "--target", pg_url], env=env)
    assert first.exit_code in (EXIT_OK, EXIT_PARTIAL), first.output
    runs = _history(pg_url)
    assert {r.status for r in runs} <= {"success", "partial"} and len(runs) == 20

    for spec in specs:
        want, want_rejected = expected_rows(spec, source_url)
        got, got_rejected = target_rows(spec, pg_url)
        assert len(got) == len(want), spec.name
        assert _digest(got) == _digest(want), f"{spec.name}: target differs from source"
        assert got_rejected == want_rejected, spec.name

    engine = create_engine(pg_url)
    with engine.connect() as c:
        dead = c.execute(sa.text("SELECT action, reason, raw_record FROM sync_dead_letters")).fetchall()
    engine.dispose()
    nulled = [d for d in dead if d.action == "nulled"]
    rejected = [d for d in dead if d.action == "rejected"]
    assert any("zero date" in d.reason and "0000-00-00" in d.raw_record for d in nulled)  # kept, with the reason
    assert any("invalid email" in d.reason for d in nulled)
    assert rejected and sum(r.records_failed for r in runs) == len(rejected)

    # no source change: nothing created or updated, far less work
    last_id = runs[-1].id
    second = CliRunner().invoke(main, ["run", str(SPECS), "--target", pg_url], env=env)
    assert second.exit_code in (EXIT_OK, EXIT_PARTIAL), second.output
    again = _history(pg_url, last_id)
    assert len(again) == 20
    assert sum(r.records_created for r in again) == 0
    assert sum(r.records_updated for r in again) == 0
    # less work, not less time (timings belong to bench/): each entity with a cursor reads only its
    # delta now; the few without one are read whole again, as every run of them is
    def modes(rs):
        return {r.configuration["spec"].rsplit("/", 1)[-1]: r.configuration["window"]["mode"] for r in rs}
    first, now = modes(runs), modes(again)
    assert now == {spec: "full" if mode == "full" else "delta" for spec, mode in first.items()}, (first, now)
    assert list(now.values()).count("delta") >= 15, now
    assert sum(r.records_processed for r in again) < sum(r.records_processed for r in runs) / 10


def test_a_spec_added_as_yaml_alone_is_picked_up(genius_source, sqlite_url, tmp_path):
    source_url, engine = genius_source
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE warranty (id INT PRIMARY KEY, prospect_id INT, years INT, "
                          "updated_at DATETIME, INDEX (updated_at, id))"))
        c.execute(sa.text("INSERT INTO warranty VALUES (1, 1, 10, '2025-01-01 10:00:00'), "
                          "(2, 2, 25, '2025-01-02 10:00:00'), (3, 3, 5, '2025-01-03 10:00:00')"))
    folder = tmp_path / "genius"
    shutil.copytree(SPECS, folder)
    (folder / "warranties.yaml").write_text(
        "crm: genius\nentity: warranties\nafter: [prospects]\n"
        "source:\n  kind: sql\n  url: ${GENIUS_DB_URL}\n"
        "  query: SELECT id, prospect_id, years, updated_at FROM warranty\n"
        "  cursor: updated_at\n  key: id\n  timezone: America/New_York\n"
        "target: {table: genius_warranties, key: [id]}\n"
        "fields:\n  id: {type: integer, required: true}\n  prospect_id: {type: integer}\n"
        "  years: {type: integer, min: 1, max: 50}\n  updated_at: {type: datetime, required: true}\n")
    res = CliRunner().invoke(main, ["run", str(folder), "--target", sqlite_url,
                                    "--only", "prospects", "--only", "warranties"],
                             env={"GENIUS_DB_URL": source_url})
    assert res.exit_code in (EXIT_OK, EXIT_PARTIAL), res.output
    order = [r.sync_type for r in _history(sqlite_url)]
    assert order == ["prospects", "warranties"]
    t = create_engine(sqlite_url)
    with t.connect() as c:
        assert c.execute(sa.text("SELECT id, years FROM genius_warranties ORDER BY id")).fetchall() == [(1, 10), (2, 25), (3, 5)]
    t.dispose()
