"""The command line as users and cron call it: exit codes, refused options, secrets, lint."""
from __future__ import annotations

import json
import logging
import uuid

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from syncrunner.cli import EXIT_FAILED, EXIT_PARTIAL, EXIT_USAGE, main
from syncrunner.runtime.target import target_exists
from tests.conftest import MYSQL_SERVER
from tests.helpers import history, item, make_source, rows, write_spec


def invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.mark.parametrize("value", ["2025-01-01'; DROP TABLE x; --", "yesterday", "2025-13-45", "2025-1-1"])
def test_hostile_or_malformed_start_date_is_refused_and_touches_nothing(tmp_path, mysql_url, value):
    make_source(mysql_url, 10)
    target = f"sqlite:///{tmp_path / 't.db'}"
    res = invoke("run", write_spec(tmp_path), "--start-date", value, "--target", target,
                 env={"ITEM_DB_URL": mysql_url})
    assert res.exit_code == 2
    assert "--start-date" in res.output and "date" in res.output
    assert not target_exists(target)
    assert rows(mysql_url, "SELECT COUNT(*) FROM item")[0][0] == 10


def test_exit_codes_success_then_partial(tmp_path, mysql_url, sqlite_url):
    src = make_source(mysql_url, 20)
    spec = write_spec(tmp_path)
    ok = invoke("run", spec, "--target", sqlite_url, env={"ITEM_DB_URL": mysql_url})
    assert ok.exit_code == 0, ok.output
    assert "testcrm.items" in ok.output and "success" in ok.output
    with src.begin() as c:
        c.execute(item.update().where(item.c.id == 2).values(email="bad@", updated_at=sa.func.now()))
    partial = invoke("run", spec, "--target", sqlite_url, env={"ITEM_DB_URL": mysql_url})
    assert partial.exit_code == EXIT_PARTIAL
    assert history(sqlite_url)[-1].status == "partial"


def test_unreachable_source_fails_with_exit_code_and_history(tmp_path, sqlite_url):
    res = invoke("run", write_spec(tmp_path), "--target", sqlite_url,
                 env={"ITEM_DB_URL": "mysql+pymysql://root@127.0.0.1:1/nowhere"})
    assert res.exit_code == EXIT_FAILED
    h = history(sqlite_url)[-1]
    assert h.status == "failed" and "OperationalError" in h.error_message


def test_missing_env_var_names_variable_and_spec(tmp_path, sqlite_url):
    spec = write_spec(tmp_path)
    res = CliRunner().invoke(main, ["run", str(spec), "--target", sqlite_url], env={"ITEM_DB_URL": ""})
    assert res.exit_code == EXIT_USAGE
    assert "ITEM_DB_URL" in res.output and str(spec) in res.output


@pytest.fixture
def mysql_user_with_password(mysql_url):
    """A MariaDB account with a real password, so the source URL carries a secret."""
    user, password = f"sr_{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex}"
    db = sa.engine.make_url(mysql_url).database
    admin = sa.create_engine(f"{MYSQL_SERVER}/", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"))
        c.execute(sa.text(f"GRANT ALL ON `{db}`.* TO '{user}'@'%'"))
    yield user, password, db
    with admin.connect() as c:
        c.execute(sa.text(f"DROP USER '{user}'@'%'"))
    admin.dispose()


def test_secrets_never_reach_history_or_logs(tmp_path, mysql_url, sqlite_url, mysql_user_with_password, caplog):
    user, password, db = mysql_user_with_password
    make_source(mysql_url, 30)
    text = write_spec(tmp_path).read_text().replace(
        "${ITEM_DB_URL}", f"mysql+pymysql://{user}:${{ITEM_DB_PASSWORD}}@127.0.0.1:3306/{db}")
    spec = tmp_path / "secret.yaml"
    spec.write_text(text)
    env = {"ITEM_DB_PASSWORD": password}
    caplog.set_level(logging.DEBUG)
    outputs = []
    for args in (["run", spec, "--debug"], ["run", spec, "--dry-run"], ["plan", spec]):
        res = invoke(*args, "--target", sqlite_url, env=env)
        assert res.exit_code == 0, res.output
        outputs.append(res.output)
    # a failing run whose error mentions the connection
    bad = spec.read_text().replace(":3306/", ":3306/nosuchdb_")
    (tmp_path / "bad.yaml").write_text(bad)
    outputs.append(invoke("run", tmp_path / "bad.yaml", "--target", sqlite_url, env=env).output)
    stored = json.dumps([dict(r._mapping) for r in history(sqlite_url)], default=str)
    assert "run" in stored and history(sqlite_url)[0].records_created == 30
    for blob in outputs + [stored, caplog.text]:
        assert password not in blob


def test_lint_reports_three_located_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "crm: genius\n"
        "entity: things\n"
        "source:\n"
        "  kind: sql\n"
        "  url: sqlite:///x.db\n"
        "  query: SELECT id, updated_at FROM thing\n"
        "  cursor: updated_on\n"          # line 7: cursor not in the mapping
        "  key: id\n"
        "  chunk_sise: 1000\n"            # line 9: typo'd key
        "target:\n"
        "  table: things\n"
        "  key: [id]\n"
        "fields:\n"
        "  id: {from: id, type: integr}\n"  # line 14: wrong type
        "  updated_at: {from: updated_at, type: datetime}\n")
    res = invoke("lint", bad)
    assert res.exit_code == 1
    errors = [line for line in res.output.splitlines() if line.startswith(str(bad))]
    assert len(errors) == 3, res.output
    assert errors[0].startswith(f"{bad}:7: source.cursor:") and "updated_on" in errors[0]
    assert errors[1].startswith(f"{bad}:9: source.chunk_sise:") and "chunk_size" in errors[1]
    assert errors[2].startswith(f"{bad}:14: fields.id.type:") and "integr" in errors[2]


def test_broken_yaml_is_located_with_the_full_parser_message(tmp_path):
    """Specs parse with libyaml; a document it rejects is parsed again by PyYAML's own parser, whose
    message names the character or alias at fault."""
    tab = tmp_path / "tab.yaml"
    tab.write_text("crm: genius\nentity: things\n\tsource: {}\n")
    alias = tmp_path / "alias.yaml"
    alias.write_text("crm: genius\nentity: *nope\n")
    res = invoke("lint", tab, alias)
    assert res.exit_code == 1
    assert f"{tab}:3: (yaml): invalid YAML: found character '\\t' that cannot start any token" in res.output
    assert f"{alias}:2: (yaml): invalid YAML: found undefined alias 'nope'" in res.output


def test_libyaml_and_pyyaml_locate_every_shipped_spec_alike():
    from pathlib import Path

    import yaml
    from syncrunner.spec import yamlpos
    paths = sorted((Path(__file__).resolve().parent.parent / "specs").rglob("*.yaml"))
    assert paths and yamlpos._FAST_LOADER is not None
    for path in paths:
        text = open(path, encoding="utf-8").read()
        fast, full = yamlpos._load(text, yamlpos._FAST_LOADER), yamlpos._load(text, yaml.SafeLoader)
        assert (fast.data, fast.key_lines, fast.value_lines) == (full.data, full.key_lines, full.value_lines), path


def test_lint_rejects_value_pasted_into_sql(tmp_path):
    spec = write_spec(tmp_path)
    text = spec.read_text().replace("FROM item", "FROM item WHERE updated_at >= '{{ since }}'")
    spec.write_text(text)
    res = invoke("lint", spec)
    assert res.exit_code == 1
    assert "source.query" in res.output and "bind parameters" in res.output


def test_plan_shows_window_sql_and_ddl(tmp_path, mysql_url, sqlite_url):
    make_source(mysql_url, 5)
    res = invoke("plan", write_spec(tmp_path), "--since", "2025-03-01", "--target", sqlite_url,
                 env={"ITEM_DB_URL": mysql_url})
    assert res.exit_code == 0, res.output
    assert "window:  since" in res.output and "why:     --start-date 2025-03-01" in res.output
    assert ":sr_since" in res.output and "2025-03-01T00:00:00" in res.output
    assert "CREATE TABLE items" in res.output
    assert not target_exists(sqlite_url)


def test_enqueue_without_the_celery_extra_says_how_to_get_it():
    """`pip install .` without [celery]: the command is listed and says which extra it needs."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['celery'] = None; from syncrunner.cli import entry; "
            "sys.argv = ['syncrunner'] + sys.argv[1:]; entry()")
    listed = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True)
    assert listed.returncode == 0 and "enqueue" in listed.stdout
    res = subprocess.run([sys.executable, "-c", code, "enqueue", "specs/"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "`syncrunner enqueue` needs the celery extra: pip install 'syncrunner[celery]'" in res.stderr
