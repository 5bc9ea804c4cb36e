"""No secret in any output of any command.

A MariaDB user with a password is the source (its URL in SHOP_DB_URL) and the target, and a token
(SHOP_API_TOKEN) is rendered into the spec's SQL, so it travels through plans, --debug SQL logs and
error messages. Every command runs in a fresh process (the redaction registry starts empty, as in
production); stdout, stderr, the files written and the SyncHistory rows are searched for both."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

from syncrunner.dburl import create_engine
from tests.conftest import MYSQL_SERVER

SPEC = """\
# yaml-language-server: $schema=../schemas/spec.schema.json
crm: shop
entity: orders
source:
  kind: sql
  url: ${SHOP_DB_URL}
  query: |
    SELECT id, email, updated_at FROM orders WHERE email <> '${SHOP_API_TOKEN}'
  cursor: updated_at
  key: id
  chunk_size: 40
target:
  table: shop_orders
  key: [id]
fields:
  id:         {from: id, type: integer, required: true}
  email:      {from: email, type: string, validators: [email]}
  updated_at: {from: updated_at, type: datetime, required: true}
"""


@pytest.fixture
def secret_env(mysql_url, mysql_target_url):
    """A MariaDB user with a password, allowed on the source and target databases."""
    user, password = f"sr_{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex}-s3cr3t"
    token = f"tok-{uuid.uuid4().hex}"
    src_db = sa.engine.make_url(mysql_url).database
    tgt_db = sa.engine.make_url(mysql_target_url).database
    admin = sa.create_engine(f"{MYSQL_SERVER}/", isolation_level="AUTOCOMMIT")
    hosts = ("%", "localhost", "127.0.0.1")
    with admin.connect() as c:
        for host in hosts:
            c.execute(sa.text(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'"))
            for db in (src_db, tgt_db):
                c.execute(sa.text(f"GRANT ALL ON `{db}`.* TO '{user}'@'{host}'"))
    base = MYSQL_SERVER.replace("root:@", f"{user}:{password}@")
    src = create_engine(mysql_url)
    with src.begin() as c:
        c.execute(sa.text("CREATE TABLE orders (id INT PRIMARY KEY, email VARCHAR(100), updated_at DATETIME NOT NULL)"))
        c.execute(sa.text("INSERT INTO orders VALUES (:id, :email, '2025-03-01 10:00:00' + INTERVAL :id MINUTE)"),
                  [{"id": i, "email": "bad@" if i == 7 else f"u{i}@example.com"} for i in range(1, 101)])
    src.dispose()
    yield {"source": f"{base}/{src_db}?charset=utf8mb4", "target": f"{base}/{tgt_db}?charset=utf8mb4",
           "password": password, "token": token}
    with admin.connect() as c:
        for host in hosts:
            c.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'{host}'"))
    admin.dispose()


def _cli(args: list[str], env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from syncrunner.cli import main; main()", *args],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_no_secret_in_any_output(tmp_path, secret_env):
    password, token = secret_env["password"], secret_env["token"]
    env = {**os.environ, "SHOP_DB_URL": secret_env["source"], "SHOP_API_TOKEN": token,
           "SYNCRUNNER_TARGET_URL": secret_env["target"], "PYTHONPATH": os.getcwd()}
    env.pop("SHOP_TARGET_URL", None)
    (tmp_path / "specs").mkdir()
    spec = tmp_path / "specs" / "orders.yaml"
    spec.write_text(SPEC)
    broken = tmp_path / "specs" / "broken.yaml"
    broken.write_text(SPEC.replace("entity: orders", "entity: broken").replace("FROM orders", "FROM no_such_table")
                      .replace("table: shop_orders", "table: shop_broken"))
    commands = [
        (["lint", "specs"], 0),
        (["plan", "specs/orders.yaml"], 0),
        (["run", "specs/orders.yaml", "--dry-run"], 0),
        (["run", "specs/orders.yaml"], 3),                                  # record 7 is dead-lettered
        # record 7 again, unchanged: already kept, so not a new failure
        (["run", "specs/orders.yaml", "--full", "--json", "--debug"], 0),
        (["run", "specs/orders.yaml", "--full", "--log-format", "json", "--debug"], 0),
        (["run", "specs/broken.yaml", "--debug"], 1),                       # the error quotes the SQL
        (["run", "specs/", "--json", "--target", secret_env["source"].replace("3306", "1")], 1),
        (["history"], 0),
        (["history", "--json", "--status", "failed"], 0),
        (["health"], 1),
        (["health", "--json", "--partial-ok"], 1),
        (["health", "--target", secret_env["source"].replace("3306", "1")], 1),
        (["init", "--from-table", secret_env["source"], "orders", "--crm", "shop", "--entity", "copy",
          "--out", "specs/copy.yaml"], 0),
        (["init", "--from-table", "$SHOP_DB_URL", "orders", "--crm", "shop", "--entity", "copy2",
          "--out", "specs/copy2.yaml"], 0),
        (["init", "--from-table", secret_env["source"], "orders", "--crm", "shop", "--entity", "copy3",
          "--out", "specs/copy3.yaml"], 0, {"SHOP_DB_URL": ""}),        # not set yet: says what to export
        (["init", "--from-table", secret_env["source"], "missing", "--crm", "shop", "--entity", "x"], 1),
        (["init", "--from-table", secret_env["source"].replace("3306", "1"), "orders", "--crm", "shop",
          "--entity", "y"], 1),
    ]
    seen = []
    for args, code, *extra_env in commands:
        res = _cli(args, {**env, **(extra_env[0] if extra_env else {})}, tmp_path)
        out = res.stdout + res.stderr
        assert res.returncode == code, (args, out[-3000:])
        for secret in (password, token):
            assert secret not in out, f"{args} printed a secret:\n{out[-3000:]}"
        seen.append(out)
    everything = "\n".join(seen)
    assert "***" in everything and "WHERE email <> '***'" in everything   # redacted, not absent
    assert "export SHOP_DB_URL='mysql+pymysql://sr_" in everything and ":***@127.0.0.1" in everything

    for written in (tmp_path / "specs").glob("*.yaml"):
        text = written.read_text()
        assert password not in text and token not in text, written
    assert "url: ${SHOP_DB_URL}" in (tmp_path / "specs" / "copy.yaml").read_text()

    target = create_engine(secret_env["target"])
    with target.connect() as c:
        for table in ("sync_history", "sync_dead_letters"):
            dump = "\n".join(map(str, c.execute(sa.text(f"SELECT * FROM {table}")).fetchall()))
            assert dump and password not in dump and token not in dump, table
    target.dispose()


def test_debug_request_urls_are_shown_with_the_token_redacted(tmp_path, sqlite_url):
    """--debug logs every HTTP request line; a token sent as a query parameter shows as ***."""
    from tests.test_http_source import ListAPI, offset_list_spec

    with ListAPI() as api:
        offset_list_spec(tmp_path, api.base_url, "LIST_API_KEY")
        env = {**os.environ, "LIST_API_KEY": "qkey-123456", "PYTHONPATH": os.getcwd()}
        for extra in ([], ["--json"], ["--log-format", "json"]):
            res = _cli(["run", "s.yaml", "--debug", "--target", sqlite_url, *extra], env, tmp_path)
            out = res.stdout + res.stderr
            assert res.returncode == 0, out[-2000:]
            assert "qkey-123456" not in out
            assert 'GET /offset?limit=25&offset=0&api_key=*** HTTP/1.1' in out.replace('\\"', '"')
