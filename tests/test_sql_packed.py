"""Packed rows: a MariaDB source read as one JSON array text per row, streamed or grouped (one
GROUP_CONCAT row per chunk), must hand out exactly the records a plain read does (same keys, values
and value types), and fall back to plain reads where it cannot."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncrunner.adapters.sources.sql import SqlSource
from syncrunner.dburl import create_engine
from syncrunner.runtime.strategy import Window
from syncrunner.spec import load_spec

FULL = Window(mode="full", reason="test")

SPEC = """\
crm: t
entity: packed
source:
  kind: sql
  url: ${{DB_URL}}
  query: {query}
  cursor: updated_at
  key: id
  chunk_size: {chunk_size}
target: {{table: packed, key: [id]}}
fields:
  id: {{type: integer, required: true}}
  updated_at: {{type: datetime}}
"""

# Every packed column type, with the values most likely to come back different through JSON.
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
# Expressions too: booleans (JSON true/false unless unpacked with + 0), decimal arithmetic, JSON values
# (nested as JSON unless CONCAT'ed), a NULL literal.
QUERY = ("SELECT t.*, t.ti = 0 AS is_zero, t.bi IS NULL AS no_bi, EXISTS(SELECT 1 FROM every_type u WHERE u.id = t.id + 1)"
         " AS has_next, TRUE AS yes, t.d102 * 3 AS triple, t.d100 / 3 AS third, JSON_OBJECT('id', t.id) AS obj,"
         " NULL AS nothing, CONCAT(t.vc, '!') AS shout FROM every_type t")


def _spec(tmp_path: Path, url: str, query: str, chunk_size: int = 2):
    p = tmp_path / "packed.yaml"
    p.write_text(SPEC.format(query=json.dumps(query), chunk_size=chunk_size))
    return load_spec(p, {"DB_URL": url})


def _read(spec, monkeypatch, packed: bool, grouped: bool = True) -> tuple[list[dict], SqlSource, list]:
    monkeypatch.setenv("SYNCRUNNER_SQL_PACKED", "1" if packed else "0")
    monkeypatch.setenv("SYNCRUNNER_SQL_GROUPED", "1" if grouped else "0")
    source = SqlSource(spec)
    chunks = list(source.chunks(FULL, None, 0))
    return [r for c in chunks for r in c.records], source, chunks


def _assert_same(plain: list[dict], packed: list[dict]) -> None:
    assert packed == plain
    for p, q in zip(plain, packed):
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


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "streamed"])
def test_packed_rows_are_the_plain_records(mysql_url, tmp_path, monkeypatch, grouped):
    _fill(mysql_url, DDL, ROWS)
    spec = _spec(tmp_path, mysql_url, QUERY)
    plain, plain_source, plain_chunks = _read(spec, monkeypatch, packed=False)
    packed, source, chunks = _read(spec, monkeypatch, packed=True, grouped=grouped)

    assert [r["id"] for r in plain] == [1, 2, 3, 4]
    _assert_same(plain, packed)
    assert source.metrics.extra == ({"packed_rows": 4, "grouped_chunks": 2} if grouped else {"packed_rows": 4})
    assert plain_source.metrics.extra == {"packed_off": "SYNCRUNNER_SQL_PACKED=0"}
    # spot checks that the comparison is not vacuous
    first, second = plain[0], plain[1]
    assert first["vc"] == NASTY and first["bu"] == 18446744073709551615 and first["js"].startswith('{"a"')
    assert repr(first["d102"]) == "Decimal('5.50')" and repr(first["d100"]) == "Decimal('5')"
    assert first["is_zero"] == 0 and first["has_next"] == 1 and first["yes"] == 1 and first["nothing"] is None
    assert second["dt"] == "0000-00-00 00:00:00" and second["da"] == "0000-00-00"  # PyMySQL's zero dates
    # each chunk carries the JSON text of its records; plain chunks carry none
    assert [len(c.raw) for c in chunks] == [len(c.records) for c in chunks] == [2, 2]
    assert all(c.raw is None for c in plain_chunks)
    assert json.loads(chunks[0].raw[0])[0] == 1


@pytest.mark.parametrize("grouped", ["1", "0"], ids=["grouped", "streamed"])
def test_packed_reads_resume_windows_and_limits_like_plain(mysql_url, tmp_path, monkeypatch, grouped):
    """Keyset positions come from the records, so resuming a packed read from a plain chunk's
    position (and the reverse) continues exactly."""
    _fill(mysql_url, DDL, ROWS)
    spec = _spec(tmp_path, mysql_url, QUERY)
    plain, _, plain_chunks = _read(spec, monkeypatch, packed=False)
    monkeypatch.setenv("SYNCRUNNER_SQL_PACKED", "1")
    monkeypatch.setenv("SYNCRUNNER_SQL_GROUPED", grouped)
    rest = [r for c in SqlSource(spec).chunks(FULL, plain_chunks[0].position, 0) for r in c.records]
    _assert_same(plain[2:], rest)
    limited = [r for c in SqlSource(spec).chunks(FULL, None, 3) for r in c.records]
    _assert_same(plain[:3], limited)


@pytest.mark.parametrize("column, kind", [
    ("DOUBLE", "DOUBLE"), ("FLOAT", "FLOAT"),   # JSON writes 123457000 and -0 as integers
    ("VARBINARY(10)", "binary VAR_STRING"), ("BLOB", "binary BLOB"),  # raw bytes inside JSON strings
    ("BIT(8)", "BIT"), ("YEAR", "YEAR"),        # not JSON at all: an unquoted \u0005, YEAR 0 as 0000
    ("TIME", "TIME"),
])
def test_types_json_cannot_round_trip_read_plainly(mysql_url, tmp_path, monkeypatch, column, kind):
    engine = create_engine(mysql_url)
    with engine.begin() as c:
        c.execute(sa.text(f"CREATE TABLE every_type (id INT PRIMARY KEY, v {column}, updated_at DATETIME)"))
        c.execute(sa.text("INSERT INTO every_type VALUES (1, 1, '2025-01-01'), (2, NULL, '2025-01-02')"))
    engine.dispose()
    spec = _spec(tmp_path, mysql_url, "SELECT id, v, updated_at FROM every_type")
    records, source, chunks = _read(spec, monkeypatch, packed=True)
    assert [r["id"] for r in records] == [1, 2]
    assert "packed_rows" not in source.metrics.extra
    assert source.metrics.extra["packed_off"] == f"column 'v' is {kind}"
    assert chunks[0].raw is None


def test_bench_table_reads_packed(mysql_url, tmp_path, monkeypatch):
    from bench.gen import generate
    generate(mysql_url, 3000)
    spec = load_spec(Path(__file__).parent.parent / "bench" / "appointments.yaml", {"SRBENCH_SOURCE_URL": mysql_url})
    plain, _, _ = _read(spec, monkeypatch, packed=False)
    packed, source, _ = _read(spec, monkeypatch, packed=True)
    assert source.metrics.extra == {"packed_rows": 3000, "grouped_chunks": -(-3000 // spec.source.chunk_size)}
    _assert_same(plain, packed)


def test_row_too_large_for_json_array_is_reread_plainly(mysql_url, tmp_path, monkeypatch):
    """The packed text is NULL (CONCAT), with only a warning, when a row's JSON exceeds max_allowed_packet; the
    plain row reads fine. The span is re-read plainly from the last chunk handed out."""
    engine = create_engine(mysql_url)
    with engine.begin() as c:
        packet = c.execute(sa.text("SELECT @@max_allowed_packet")).scalar_one()
        if packet > 64 << 20:
            pytest.skip("max_allowed_packet too large to exceed in a test")
        c.execute(sa.text("CREATE TABLE every_type (id INT PRIMARY KEY, a LONGTEXT, b LONGTEXT, updated_at DATETIME)"))
        c.execute(sa.text("INSERT INTO every_type SELECT seq, 'a', 'b', '2025-01-01' FROM seq_1_to_7"))
        c.execute(sa.text("UPDATE every_type SET a = REPEAT('a', :n), b = REPEAT('b', :n) WHERE id = 5"),
                  {"n": packet // 2 + 1000})
    engine.dispose()
    spec = _spec(tmp_path, mysql_url, "SELECT id, a, b, updated_at FROM every_type")
    plain, _, _ = _read(spec, monkeypatch, packed=False)
    packed, source, chunks = _read(spec, monkeypatch, packed=True)
    assert [r["id"] for r in packed] == list(range(1, 8))
    assert packed == plain
    assert source.metrics.extra["packed_rows"] == 4
    assert "max_allowed_packet" in source.metrics.extra["packed_off"]
    assert [c.raw is not None for c in chunks] == [True, True, False, False]


def test_group_too_long_is_streamed_from_the_same_position(mysql_url, tmp_path, monkeypatch):
    """Rows that each fit a packet but whose chunk does not (GROUP_CONCAT stops at
    group_concat_max_len, with only a warning): that chunk and the rest are streamed, packed, and
    the records are exactly the plain ones."""
    engine = create_engine(mysql_url)
    with engine.begin() as c:
        packet = c.execute(sa.text("SELECT @@max_allowed_packet")).scalar_one()
        if packet > 64 << 20:
            pytest.skip("max_allowed_packet too large to exceed in a test")
        c.execute(sa.text("CREATE TABLE every_type (id INT PRIMARY KEY, a LONGTEXT, updated_at DATETIME)"))
        c.execute(sa.text("INSERT INTO every_type SELECT seq, 'a', '2025-01-01' FROM seq_1_to_9"))
        c.execute(sa.text("UPDATE every_type SET a = REPEAT('a', :n) WHERE id > 3"), {"n": packet // 3})
    engine.dispose()
    spec = _spec(tmp_path, mysql_url, "SELECT id, a, updated_at FROM every_type", chunk_size=3)
    plain, _, _ = _read(spec, monkeypatch, packed=False)
    packed, source, chunks = _read(spec, monkeypatch, packed=True)
    assert [r["id"] for r in packed] == list(range(1, 10))
    assert packed == plain
    assert source.metrics.extra["packed_rows"] == 9
    assert source.metrics.extra["grouped_chunks"] == 1
    assert "warning(s)" in source.metrics.extra["grouped_off"]
    assert all(c.raw is not None for c in chunks)  # still packed, one row at a time


def test_grouped_reads_see_rows_that_move_between_chunks(mysql_url, tmp_path, monkeypatch):
    """Each chunk is its own query: a row whose cursor moves past the read position while the
    run reads is read again at its new place (as with streaming)."""
    engine = create_engine(mysql_url)
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE every_type (id INT PRIMARY KEY, v INT, updated_at DATETIME)"))
        c.execute(sa.text("INSERT INTO every_type SELECT seq, 0, '2025-01-01' + INTERVAL seq MINUTE FROM seq_1_to_6"))
    spec = _spec(tmp_path, mysql_url, "SELECT id, v, updated_at FROM every_type", chunk_size=2)
    monkeypatch.setenv("SYNCRUNNER_SQL_PACKED", "1")
    monkeypatch.setenv("SYNCRUNNER_SQL_GROUPED", "1")
    source = SqlSource(spec)
    it = iter(source.chunks(FULL, None, 0))
    seen = [(r["id"], r["v"]) for r in next(it).records]
    with engine.begin() as c:  # row 1 (already read) and row 3 (not yet) move to the end
        c.execute(sa.text("UPDATE every_type SET v = 1, updated_at = '2025-01-02' WHERE id IN (1, 3)"))
    seen += [(r["id"], r["v"]) for chunk in it for r in chunk.records]
    engine.dispose()
    # row 3 may have been read ahead before it moved: then it comes twice, its new state last
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
