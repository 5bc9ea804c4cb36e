"""`syncrunner lint` checks the `# yaml-language-server: $schema=` comment: a path that does not
resolve is a file:line warning naming the path that would (editors lose validation and completion
with a wrong one; a run never reads the comment, so it is not an error)."""
from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from syncrunner.cli import main
from syncrunner.ops.lint import lint_paths

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "leadconduit" / "events.yaml"


def schema_warnings(path: Path) -> list[str]:
    return [str(p) for p in lint_paths([str(path)], env={})[1] if p.key == "$schema"]


def test_every_shipped_spec_names_a_schema_that_resolves():
    assert schema_warnings(ROOT / "specs") == []
    assert all(f.read_text().startswith("# yaml-language-server: $schema=") for f in (ROOT / "specs").rglob("*.yaml"))


def test_a_wrong_schema_path_is_a_warning_with_the_right_path(tmp_path):
    repo = tmp_path / "repo"
    (repo / "schemas").mkdir(parents=True)
    shutil.copy(ROOT / "schemas" / "spec.schema.json", repo / "schemas")
    (repo / "specs" / "leadconduit").mkdir(parents=True)
    spec = repo / "specs" / "leadconduit" / "events.yaml"
    spec.write_text(SPEC.read_text())
    assert schema_warnings(spec) == []  # the same relative path resolves in this layout too
    spec.write_text(SPEC.read_text().replace("$schema=../../schemas/", "$schema=../schemas/"))
    warning, = schema_warnings(spec)
    assert warning.startswith(f"{spec}:1: $schema: warning: the yaml-language-server $schema path "
                              f"../schemas/spec.schema.json does not resolve")
    assert warning.endswith("use $schema=../../schemas/spec.schema.json")
    res = CliRunner().invoke(main, ["lint", str(spec)], env={"LEADCONDUIT_API_KEY": "x"})
    assert res.exit_code == 0 and "0 error(s), 1 warning(s)" in res.output  # a warning: lint still passes


def test_a_schema_url_is_not_fetched(tmp_path):
    spec = tmp_path / "events.yaml"
    spec.write_text(SPEC.read_text().replace("../../schemas/spec.schema.json",
                                             "https://example.invalid/spec.schema.json"))
    assert schema_warnings(spec) == []
