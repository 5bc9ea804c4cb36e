"""Exact decimals and times of day on every target (issue 22, item 3): a MariaDB source with a
DECIMAL and a TIME column, a spec made by `init --from-table`, synced into PostgreSQL, SQLite and
MariaDB targets; read back, every decimal is the source's and every time a zero-padded time."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from click.testing import CliRunner

from syncrunner.cli import main
from syncrunner.core.coerce import to_string, to_time
from syncrunner.dburl import create_engine
from tests.helpers import history, rows

N = 3000
BAD_TIMES = {N + 1: "-01:00:00", N + 2: "25:30:00"}  # MySQL TIME is an interval: not a time of day


def _quote(i: int) -> Decimal:
    return Decimal(i * 7919 % 1000003) / 100 + Decimal("0.05")


def _opens(i: int) -> dt.timedelta:
    return dt.timedelta(seconds=i * 37 % 86400, microseconds=500000 if i % 5 == 0 else 0)


def _source(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE quote (id INT PRIMARY KEY, quoted DECIMAL(14,2) NOT NULL, "
                          "opens TIME(6), updated_at DATETIME NOT NULL)"))
        base = dt.datetime(2025, 3, 1, 9, 0, 0)
        c.execute(sa.text("INSERT INTO quote VALUES (:id, :q, :o, :u)"),
                  [dict(id=i, q=_quote(i), o=str(_opens(i)), u=base + dt.timedelta(seconds=i))
                   for i in range(1, N + 1)]
                  + [dict(id=i, q=Decimal("1.00"), o=t, u=base) for i, t in BAD_TIMES.items()])
    engine.dispose()


def test_decimals_and_times_read_back_exactly_on_every_target(tmp_path, mysql_url, target_url):
    _source(mysql_url)
    spec = tmp_path / "quote.yaml"
    made = CliRunner().invoke(main, ["init", "--from-table", mysql_url, "quote", "--crm", "shop",
                                     "--entity", "quotes", "--out", str(spec)], env={"SHOP_DB_URL": ""})
    assert made.exit_code == 0, made.output
    assert "opens:" in spec.read_text() and "type: time" in spec.read_text()

    run = CliRunner().invoke(main, ["run", str(spec), "--target", target_url],
                             env={"SHOP_DB_URL": mysql_url}, catch_exceptions=False)
    assert run.exit_code == 3, run.output          # the two intervals are bad values: partial
    h = history(target_url)[-1]
    assert (h.status, h.records_created, h.records_failed) == ("partial", N, 2)
    reasons = rows(target_url, "SELECT reason FROM sync_dead_letters")
    assert len(reasons) == 2 and all("not a time of day" in r[0] for r in reasons)

    engine = create_engine(target_url)
    from syncrunner.runtime.writer import build_table
    from syncrunner.spec.load import load_spec
    typed = build_table(load_spec(spec, {"SHOP_DB_URL": mysql_url}))  # the spec's types read back
    with engine.connect() as c:
        got = {r.id: r for r in c.execute(sa.select(typed.c.id, typed.c.quoted, typed.c.opens))}
    engine.dispose()
    assert len(got) == N
    assert sum(r.quoted for r in got.values()) == sum(_quote(i) for i in range(1, N + 1))
    assert all(got[i].quoted == _quote(i) and isinstance(got[i].quoted, Decimal) for i in (1, 17, N))
    assert all(got[i].opens == (dt.datetime.min + _opens(i)).time() for i in range(1, N + 1))
    if target_url.startswith("sqlite"):            # stored text: exact, zero-padded, sortable
        raw = dict(rows(target_url, "SELECT id, quoted FROM shop_quotes WHERE id IN (1, 2)"))
        assert {type(v) for v in raw.values()} == {str} and raw[1] == str(_quote(1))
        assert rows(target_url, "SELECT COUNT(*) FROM shop_quotes WHERE typeof(quoted) <> 'text'")[0][0] == 0
        times = [r[0] for r in rows(target_url, "SELECT opens FROM shop_quotes ORDER BY opens")]
        assert times == sorted(t.isoformat("microseconds") for t in (r.opens for r in got.values()))
        assert rows(target_url, "SELECT opens FROM shop_quotes WHERE id = 1")[0][0] == "00:00:37.000000"

    again = CliRunner().invoke(main, ["run", str(spec), "--target", target_url, "--full", "--force"],
                               env={"SHOP_DB_URL": mysql_url}, catch_exceptions=False)
    assert again.exit_code == 0, again.output      # the bad two are known (kept already)
    assert (history(target_url)[-1].records_updated, history(target_url)[-1].records_created) == (0, 0)


def test_time_values():
    assert to_time(dt.timedelta(hours=9, minutes=30)) == dt.time(9, 30)
    assert to_time("9:30") == dt.time(9, 30) and to_time("23:59:59.5") == dt.time(23, 59, 59, 500000)
    for bad in (dt.timedelta(hours=-1), dt.timedelta(hours=24), "838:59:59", "12:61", "noon"):
        try:
            to_time(bad)
        except ValueError as e:
            assert "time of day" in str(e)
        else:
            raise AssertionError(bad)
    assert to_string(dt.timedelta(hours=9, minutes=30)) == "09:30:00"      # was '9:30:00'
    assert to_string(-dt.timedelta(hours=100, microseconds=5)) == "-100:00:00.000005"


def test_an_older_numeric_decimal_column_on_sqlite_still_works_and_is_flagged(tmp_path, mysql_url, sqlite_url, caplog):
    from tests.helpers import make_source, sync, write_spec
    make_source(mysql_url, 10)
    engine = create_engine(sqlite_url)
    with engine.begin() as c:  # the table as syncrunner created it before decimals were text
        c.execute(sa.text("CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL, email TEXT, "
                          "amount NUMERIC(12, 2), seen_on DATE, updated_at DATETIME NOT NULL, "
                          "_sr_fingerprint BIGINT)"))
    engine.dispose()
    caplog.set_level("WARNING", logger="syncrunner.writer")
    assert sync(write_spec(tmp_path), mysql_url, sqlite_url).status == "success"
    assert "items.amount is NUMERIC(12, 2), which SQLite stores as 8-byte floats" in caplog.text
    assert rows(sqlite_url, "SELECT typeof(amount) FROM items WHERE id = 3")[0][0] == "real"
