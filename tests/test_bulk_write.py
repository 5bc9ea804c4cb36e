"""The bulk paths (COPY text on PostgreSQL, executemany of tuples elsewhere) store exactly what the
row holds: awkward strings, NULL versus the text "\\N", time zones, decimals, booleans, JSON."""
from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import sqlalchemy as sa

from syncrunner.runtime.target import make_engine
from syncrunner.runtime.writer import Writer
from syncrunner.spec.load import load_spec

SPEC = """\
crm: testcrm
entity: odd
source: {kind: sql, url: "sqlite://", query: "SELECT 1", cursor: updated_at, key: id}
target: {table: odd, key: [id], batch_size: 2}
fields:
  id:         {from: id, type: integer, required: true}
  name:       {from: name, type: string}
  code:       {from: code, type: string, max_length: 20}
  amount:     {from: amount, type: decimal, precision: 12, scale: 2}
  flag:       {from: flag, type: boolean}
  day:        {from: day, type: date}
  doc:        {from: doc, type: json}
  updated_at: {from: updated_at, type: datetime, required: true}
"""
UTC = dt.timezone.utc
ODD = ["tab\there", "line\nbreak", "cr\rhere", "back\\slash", "\\N", "", "ünïcødé ✓", "quote ' \" ;"]


def _rows():
    out = []
    for i, s in enumerate(ODD, start=1):
        out.append({"id": i, "name": s, "code": s[:20], "amount": Decimal("-12.50") if i % 2 else Decimal("0.01"),
                    "flag": bool(i % 2), "day": dt.date(2024, 2, 29),
                    "doc": {"s": s, "n": [1, None]},
                    "updated_at": dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5)))})
    out.append({"id": 99, "name": None, "code": None, "amount": None, "flag": None, "day": None, "doc": None,
                "updated_at": dt.datetime(2025, 1, 1, 17, 0, tzinfo=UTC)})
    return out


def test_bulk_write_round_trips_awkward_values(tmp_path, target_url):
    path = tmp_path / "odd.yaml"
    path.write_text(SPEC)
    engine = make_engine(target_url)
    writer = Writer(engine, load_spec(path, {}), force=False)
    with engine.connect() as conn:
        with conn.begin():
            writer.prepare(conn)
            res = writer.write(conn, _rows())
        assert (res.created, res.updated, res.unchanged, res.rejected) == (len(ODD) + 1, 0, 0, [])
        with conn.begin():
            again = writer.write(conn, _rows())
        assert (again.created, again.updated, again.unchanged) == (0, 0, len(ODD) + 1)
        got = {r.id: r for r in conn.execute(sa.text("SELECT * FROM odd"))}
    engine.dispose()
    for i, s in enumerate(ODD, start=1):
        r = got[i]
        assert (r.name, r.code) == (s, s[:20])
        assert Decimal(str(r.amount)) == (Decimal("-12.50") if i % 2 else Decimal("0.01"))
        assert bool(r.flag) == bool(i % 2)
        assert str(r.day)[:10] == "2024-02-29"
        doc = r.doc if isinstance(r.doc, dict) else json.loads(r.doc)
        assert doc == {"s": s, "n": [1, None]}
        assert str(r.updated_at)[:19] == "2025-01-01 17:00:00"  # stored as UTC
    assert (got[99].name, got[99].amount, got[99].flag, got[99].day) == (None,) * 4
    assert got[99].doc in (None, "null")  # a missing JSON value is stored as JSON null, as before



def test_sqlite_timestamp_text_is_what_sqlalchemy_binds():
    from syncrunner.targets.sqlite import utc_text
    from syncrunner.targets.sqltypes import UTCDateTime
    proc = UTCDateTime()._cached_bind_processor(sa.create_engine("sqlite://").dialect)
    for v in [dt.datetime(2025, 1, 1, 12, 0, tzinfo=UTC), dt.datetime(2025, 1, 1, 12, 0, 0, 5),
              dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
              dt.datetime(2025, 7, 1, 7, 30, tzinfo=dt.timezone(dt.timedelta(hours=-4))), None,
              dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)]:
        assert utc_text(v) == proc(v)
