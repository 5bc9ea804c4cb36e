"""The SQL source against a real MariaDB: the records are exactly what PyMySQL itself returns for
the query (same keys, values and value types, zero dates included), resumes and limits continue
exactly, and rows that move while the run reads are read again at their new place."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncrunner.core.window import Window
from syncrunner.dburl import create_engine
from syncrunner.sources.sql import SqlSource
from syncrunner.spec.load import load_spec

FULL = Window(mode="full", reason="test")

SPEC = """\
crm: t
entity: plain
source:
  kind: sql
  url: ${{DB_URL}}
  query: {query}
  cursor: updated_at
  key: id
  chunk_size: {chunk_size}
target: {{table: plain, key: [id]}}
fields:
  id: {{type: integer, required: true}}
  updated_at: {{type: datetime}}
"""

# Column types and values most likely to come back different from what PyMySQL returns.
DDL = """
CREATE TABLE every_type (
  id INT NOT NULL PRIMARY KEY,
  ti TINYINT, flag TINYINT(1), si SMALLINT, mi MEDIUMINT, bi BIGINT, bu BIGINT UNSIGNED,
  d102 DECIMAL(10,2), d100 DECIMAL(10,0), d6530 DECIMAL(65,30),
  dt DATETIME, dt6 DATETIME(6), ts TIMESTAMP NULL, ts6 TIMESTAMP(6) NULL, da DATE,
  vc VARCHAR(200), ch CHAR(10), tx TEXT, lt LONGTEXT, bin_coll VARCHAR(20) COLLATE utf8mb4_bin,
  lat VARCHAR(20) CHARACTER SET latin1, en ENUM('a', 'b\\\\c'), st SET('x', 'y'), js JSON,
  updated_at DATETIME NOT NULL
) DEFAULT CHARSET=utf8mb4
"""
NASTY = "emoji 😀 é 中 back\\slash \"dq\" 'sq' tab\there\nnewline\r\nnul\x00 ctl\x01\x1f \u2028 </script>"
ROWS = [
    dict(id=1, ti=-128, flag=1, si=-32768, mi=8388607, bi=-9223372036854775808, bu=18446744073709551615,
         d102="5.50", d100="5", d6530="-12345678901234567890123456789012345.123456789012345678901234567890",
         dt="2023-01-01 08:00:00", dt6="2023-01-01 08:00:00.000000", ts="2023-01-01 08:00:00",
         ts6="2023-01-01 08:00:00.500000", da="2023-01-02", vc=NASTY, ch="abc", tx=NASTY * 3, lt="x" * 70000,
         bin_coll="Bin", lat="café ÿ", en="b\\c", st="x,y", js='{"a": [1, 2.50, "s"], "b": null}'),
    dict(id=2, ti=0, flag=0, si=0, mi=0, bi=0, bu=0, d102="-0.01", d100="-7", d6530="0",
         dt="0000-00-00 00:00:00", dt6="2023-01-01 08:00:00.123456", ts="0000-00-00 00:00:00",
         ts6="1970-01-01 00:00:01.000001", da="0000-00-00", vc="", ch="", tx="", lt="", bin_coll="",
         lat="", en="a", st="", js="[]"),
    dict(id=3, dt="2023-02-00 00:00:00", dt6="0000-00-00 00:00:00.000000", da="2023-02-00", js="null"),
    dict(id=4, ti=127, flag=None, bu=1, d102="99999999.99", d100="9999999999", d6530="0.000000000000000000000000000001",
         dt="9999-12-31 23:59:59", dt6="1000-01-01 00:00:00.000001", ts="2038-01-19 03:14:07", da="1000-01-01",
         vc=" trailing  ", ch="  lead", js='"just a string"'),
]
# Expressions too: booleans, decimal arithmetic, JSON values, a NULL literal.
QUERY = ("SELECT t.*, t.ti = 0 AS is_zero, t.bi IS NULL AS no_bi, EXISTS(SELECT 1 FROM every_type u WHERE u.id = t.id + 1)"
         " AS has_next, TRUE AS yes, t.d102 * 3 AS triple, t.d100 / 3 AS third, JSON_OBJECT('id', t.id) AS obj,"
         " NULL AS nothing, CONCAT(t.vc, '!') AS shout FROM every_type t")


def _spec(tmp_path: Path, url: str, query: str, chunk_size: int = 2):
    p = tmp_path / "plain.yaml"
    p.write_text(SPEC.format(query=json.dumps(query), chunk_size=chunk_size))
    return load_spec(p, {"DB_URL": url})


def _read(spec) -> tuple[list[dict], SqlSource, list]:
    source = SqlSource(spec)
    chunks = list(source.chunks(FULL, None, 0))
    return [r for c in chunks for r in c.records], source, chunks


def _pymysql_rows(url: str, query: str) -> list[dict]:
    """The query's rows as PyMySQL's own converters give them (no syncrunner engine options)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            result = c.execute(sa.text(query + " ORDER BY updated_at, id"))
            return [dict(r._mapping) for r in result]
    finally:
        engine.dispose()


def _assert_same(expected: list[dict], got: list[dict]) -> None:
    assert got == expected
    for p, q in zip(expected, got):
        assert list(q) == list(p)
        assert [type(v) for v in q.values()] == [type(v) for v in p.values()], p["id"]


def _fill(url: str, ddl: str, rows: list[dict]) -> None:
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("SET SESSION sql_mode = ''"))  # zero dates are what legacy sources hold
        c.execute(sa.text(ddl))
        for i, row in enumerate(rows):
            row = {**row, "updated_at": f"2025-01-01 00:00:{i // 2:02d}"}  # pairs share a cursor value
            c.execute(sa.text(f"INSERT INTO every_type ({', '.join(row)}) VALUES ({', '.join(':' + k for k in row)})"), row)
    engine.dispose()


def test_records_are_what_pymysql_returns_value_for_value_and_type_for_type(mysql_url, tmp_path):
    _fill(mysql_url, DDL, ROWS)
    spec = _spec(tmp_path, mysql_url, QUERY)
    records, source, chunks = _read(spec)
    expected = _pymysql_rows(mysql_url, f"SELECT * FROM ({QUERY}) src")
    assert [r["id"] for r in records] == [1, 2, 3, 4]
    _assert_same(expected, records)
    assert [len(c.records) for c in chunks] == [2, 2]
    assert source.metrics.extra == {}
    # spot checks that the comparison is not vacuous
    first, second = records[0], records[1]
    assert first["vc"] == NASTY and first["bu"] == 18446744073709551615 and first["js"].startswith('{"a"')
    assert repr(first["d102"]) == "Decimal('5.50')" and repr(first["d100"]) == "Decimal('5')"
    assert first["is_zero"] == 0 and first["has_next"] == 1 and first["yes"] == 1 and first["nothing"] is None
    assert second["dt"] == "0000-00-00 00:00:00" and second["da"] == "0000-00-00"  # PyMySQL's zero dates
    assert repr(first["dt6"]) == "datetime.datetime(2023, 1, 1, 8, 0)"


def test_reads_resume_from_a_chunk_position_and_stop_at_the_limit(mysql_url, tmp_path):
    """Keyset positions come from the records: resuming from a chunk's position continues exactly."""
    _fill(mysql_url, DDL, ROWS)
    spec = _spec(tmp_path, mysql_url, QUERY)
    records, _, chunks = _read(spec)
    rest = [r for c in SqlSource(spec).chunks(FULL, chunks[0].position, 0) for r in c.records]
    _assert_same(records[2:], rest)
    limited = [r for c in SqlSource(spec).chunks(FULL, None, 3) for r in c.records]
    _assert_same(records[:3], limited)


def test_rows_that_move_while_the_run_reads_are_read_again_at_their_new_place(mysql_url, tmp_path):
    """A phase ends only when a query from the last position finds nothing: a row whose cursor
    moves past the read position while the run reads is read at its new place."""
    engine = create_engine(mysql_url)
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE every_type (id INT PRIMARY KEY, v INT, updated_at DATETIME)"))
        c.execute(sa.text("INSERT INTO every_type SELECT seq, 0, '2025-01-01' + INTERVAL seq MINUTE FROM seq_1_to_6"))
    spec = _spec(tmp_path, mysql_url, "SELECT id, v, updated_at FROM every_type", chunk_size=2)
    it = iter(SqlSource(spec).chunks(FULL, None, 0))
    seen = [(r["id"], r["v"]) for r in next(it).records]
    with engine.begin() as c:  # row 1 (already read) and row 3 (not yet) move to the end
        c.execute(sa.text("UPDATE every_type SET v = 1, updated_at = '2025-01-02' WHERE id IN (1, 3)"))
    seen += [(r["id"], r["v"]) for chunk in it for r in chunk.records]
    engine.dispose()
    # row 3 may have been read in the query's snapshot before it moved: then it comes twice, its new state last
    assert dict(seen) == {1: 1, 2: 0, 3: 1, 4: 0, 5: 0, 6: 0}
    assert seen[-2:] == [(1, 1), (3, 1)]
    assert [i for i, _ in seen[:-2]] in ([1, 2, 4, 5, 6], [1, 2, 3, 4, 5, 6])


def test_loopback_pymysql_connections_skip_tls_unless_the_url_or_arguments_ask(mysql_url):
    """PyMySQL 1.2 prepares TLS ('preferred') on every connection: ~54 ms of CPU for the system CA
    store here, for a loopback link. dburl.create_engine turns it off there, and only there."""
    import sqlalchemy as sa
    from syncrunner.dburl import create_engine

    def tls_prepared(url: str, **kw) -> bool:
        engine = create_engine(url, **kw)
        try:
            raw = engine.raw_connection()
            try:
                return raw.driver_connection.ssl
            finally:
                raw.close()
        finally:
            engine.dispose()

    assert tls_prepared(mysql_url) is False
    assert tls_prepared(mysql_url, connect_args={"ssl_disabled": False}) is True  # the caller's choice stands
    remote = sa.engine.make_url(mysql_url).set(host="db.example.com")
    from syncrunner.dburl import _plain_loopback_pymysql, normalize_url
    assert not _plain_loopback_pymysql(normalize_url(remote.render_as_string(hide_password=False)), {})
    assert not _plain_loopback_pymysql(normalize_url(mysql_url + "&ssl_ca=/etc/ca.pem"), {})
