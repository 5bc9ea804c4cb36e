"""Issue 26: schedules.yaml (Celery beat's schedule) is checked by its JSON Schema and by
`syncrunner lint`, with file:line: key: message, as specs are."""
from __future__ import annotations

import pytest

from syncrunner.core.cron import cron_problem
from syncrunner.spec.load import find_specs
from syncrunner.spec.schedules import load_schedules
from tests.helpers import cli, write_spec

GOOD = """\
# yaml-language-server: $schema=schemas/schedules.schema.json
timezone: America/New_York
schedules:
  - name: items-hourly
    run: specs/
    cron: "5 * * * *"
  - name: items-nightly
    run: specs/items.yaml
    cron: "30 2 * * mon-fri"
    flags: {full: true, max_records: 10}
    expires: 6h
"""


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "specs").mkdir()
    write_spec(tmp_path / "specs")
    return tmp_path


def _lint(folder, text: str, env=None):
    (folder / "schedules.yaml").write_text(text)
    import os
    return cli("lint", folder / "schedules.yaml", env=env or dict(os.environ, ITEM_DB_URL="sqlite://"))


def test_a_good_schedules_file_lints_clean_and_loads(folder):
    res = _lint(folder, GOOD)
    assert res.returncode == 0, res.stdout + res.stderr
    s = load_schedules(folder / "schedules.yaml")
    assert s.timezone == "America/New_York"
    assert [(e.name, e.run, e.cron, e.flags, e.expires_seconds) for e in s.entries] == [
        ("items-hourly", str(folder / "specs"), "5 * * * *", {}, 86400.0),
        ("items-nightly", str(folder / "specs" / "items.yaml"), "30 2 * * mon-fri",
         {"full": True, "max_records": 10}, 21600.0)]
    # a folder's schedules file is not a spec: `run specs/` and `lint` of the folder do not take it as one
    assert find_specs([str(folder)]) == [folder / "specs" / "items.yaml"]


def test_a_bad_cron_expression_fails_lint_with_file_line_and_key(folder):
    res = _lint(folder, GOOD.replace('"30 2 * * mon-fri"', '"30 25 * * mon-fri"'))
    assert res.returncode == 1
    assert f"{folder / 'schedules.yaml'}:9: schedules.1.cron: '30 25 * * mon-fri': hour '25' is out of " \
           "range (0-23)" in res.stderr


@pytest.mark.parametrize("change, line, key, message", [
    (('cron: "5 * * * *"', 'cron: "5 * * *"'), 6, "schedules.0.cron", "has 4 field(s)"),
    (("run: specs/\n", "run: nowhere/\n"), 5, "schedules.0.run", "'nowhere/' does not exist"),
    (("    expires: 6h\n", "    expire: 6h\n"), 11, "schedules.1.expire", "unknown key 'expire'"),
    (("{full: true,", "{fulll: true,"), 10, "schedules.1.flags.fulll", "unknown key 'fulll'"),
    (("America/New_York", "Mars/Olympus"), 2, "timezone", "unknown time zone 'Mars/Olympus'"),
    (("name: items-nightly", "name: items-hourly"), 7, "schedules.1.name", "named twice"),
])
def test_schedules_problems_name_file_line_and_key(folder, change, line, key, message):
    res = _lint(folder, GOOD.replace(*change))
    assert res.returncode == 1
    assert f"{folder / 'schedules.yaml'}:{line}: {key}: " in res.stderr and message in res.stderr, res.stderr


EXPRESSIONS = ["5 * * * *", "*/15 2-4 1,15 jan-mar mon-fri", "0 22-2 * * *", "1-10/3 * * * sun",
               "0 0 * * 7", "61 * * * *", "0 0 0 * *", "0 0 * 13 *", "x * * * *", "*/0 * * * *",
               "0 0 L * *", "* * * *", "0 0 * * fri-mon", "0 0 * DEC *"]


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_the_cron_check_agrees_with_celerys_crontab(text):
    """What lint accepts, beat's crontab accepts; what lint refuses, crontab refuses."""
    crontab = pytest.importorskip("celery.schedules").crontab
    keys = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
    try:
        crontab(**dict(zip(keys, text.split(), strict=True)))
        celery_ok = True
    except ValueError:
        celery_ok = False
    assert (cron_problem(text) is None) == celery_ok, cron_problem(text)
