"""`syncrunner init --from-table`: a spec reflected from a MariaDB table lints clean and syncs it."""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from click.testing import CliRunner

from syncrunner.cli import main
from syncrunner.dburl import create_engine
from syncrunner.ops.lint import lint_paths
from tests.helpers import history, rows

DDL = """
CREATE TABLE `Job Orders` (
  `OrderID` INT NOT NULL PRIMARY KEY,
  `customer name` VARCHAR(80) NOT NULL,
  `Email` VARCHAR(120),
  `amount` DECIMAL(10,2),
  `ratio` DOUBLE,
  `is_paid` TINYINT(1),
  `placed_on` DATE,
  `notes` TEXT,
  `payload` JSON,
  `photo` BLOB,
  `created_at` DATETIME,
  `last_modified` DATETIME NOT NULL
)"""


def _make_table(url: str, n: int = 2500) -> None:
    engine = create_engine(url)
    base = dt.datetime(2025, 1, 1, 8, 0, 0)
    with engine.begin() as c:
        c.execute(sa.text(DDL))
        c.execute(sa.text(
            "INSERT INTO `Job Orders` VALUES (:id, :name, :email, :amount, :ratio, :paid, :placed, :notes,"
            " :payload, :photo, :created, :modified)"),
            [dict(id=i, name=f"Customer {i}", email=f"c{i}@example.com", amount=i * 1.25, ratio=i / 7,
                  paid=i % 2, placed=dt.date(2025, 1, 1) + dt.timedelta(days=i % 300), notes=f"note {i}",
                  payload='{"k": %d}' % i, photo=b"\x00\x01", created=base,
                  modified=base + dt.timedelta(seconds=i)) for i in range(1, n + 1)])
    engine.dispose()


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def test_init_from_mariadb_table_lints_clean_and_syncs(tmp_path, mysql_url, sqlite_url):
    _make_table(mysql_url)
    out = tmp_path / "specs" / "shop" / "orders.yaml"
    res = invoke("init", "--from-table", mysql_url, "Job Orders", "--crm", "shop", "--entity", "orders",
                 "--out", out, env={"SHOP_DB_URL": ""})
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert text.startswith("# yaml-language-server: $schema=")
    assert "url: ${SHOP_DB_URL}" in text and mysql_url not in text
    assert "export SHOP_DB_URL=" in res.output
    assert "cursor: last_modified" in text                      # guessed from the name
    assert "customer_name:" in text and "`customer name` AS customer_name" in text
    assert "photo" in res.output and "photo:" not in text         # binary column skipped, said so

    count, problems = lint_paths([str(out)], {"SHOP_DB_URL": mysql_url})
    assert count == 1 and [p for p in problems if p.severity == "error"] == []

    run = invoke("run", out, "--target", sqlite_url, env={"SHOP_DB_URL": mysql_url})
    assert run.exit_code == 0, run.output
    h = history(sqlite_url)[-1]
    assert (h.status, h.records_processed, h.records_created, h.records_failed) == ("success", 2500, 2500, 0)
    got = rows(sqlite_url, "SELECT orderid, customer_name, amount, is_paid, last_modified FROM shop_orders "
                           "WHERE orderid = 7")
    assert got[0][1] == "Customer 7" and float(got[0][2]) == 8.75 and got[0][3] == 1
    again = invoke("run", out, "--target", sqlite_url, env={"SHOP_DB_URL": mysql_url})
    assert again.exit_code == 0
    assert history(sqlite_url)[-1].records_processed == 301    # delta: the last 5 min (lookback) of cursor


def test_init_reads_url_from_env_and_refuses_overwrite(tmp_path, mysql_url):
    _make_table(mysql_url, 3)
    out = tmp_path / "o.yaml"
    env = {"SHOP_DB_URL": mysql_url}
    res = invoke("init", "--from-table", "$SHOP_DB_URL", "Job Orders", "--crm", "shop", "--entity", "orders",
                 "--out", out, "--no-cursor", env=env)
    assert res.exit_code == 0, res.output
    assert "already set" in res.output and "# no cursor" in out.read_text()
    again = invoke("init", "--from-table", "$SHOP_DB_URL", "Job Orders", "--crm", "shop", "--entity", "orders",
                   "--out", out, env=env)
    assert again.exit_code != 0 and "--force" in again.output


def test_init_missing_table_names_the_tables_there(tmp_path, mysql_url):
    _make_table(mysql_url, 1)
    res = invoke("init", "--from-table", mysql_url, "nope", "--crm", "shop", "--entity", "x",
                 "--out", tmp_path / "x.yaml")
    assert res.exit_code == 1 and "no table 'nope'" in res.output and "Job Orders" in res.output
    assert not (tmp_path / "x.yaml").exists()
