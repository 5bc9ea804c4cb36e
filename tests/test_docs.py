"""Docs and editor support: the generated spec reference is current, every schema key is annotated,
every spec names the schema on its first line, and links between docs pages resolve."""
from __future__ import annotations

import json
import re
from pathlib import Path

import click
from click.testing import CliRunner

from syncrunner.cli import main
from syncrunner.spec.docsgen import generate, missing_annotations, reference_path
from syncrunner.spec.load import schema_path

ROOT = Path(__file__).resolve().parent.parent


def test_spec_reference_is_up_to_date_with_the_schema():
    assert reference_path().read_text() == generate(), \
        "docs/spec-reference.md is stale: run `python -m syncrunner.spec.docsgen`"
    res = CliRunner().invoke(main, ["docs", "--check"])
    assert res.exit_code == 0, res.output


def test_stale_reference_is_detected(tmp_path):
    schema = json.loads(schema_path().read_text())
    schema["properties"]["crm"]["description"] = "changed"
    changed = tmp_path / "s.json"
    changed.write_text(json.dumps(schema))
    assert generate(changed) != reference_path().read_text()


def test_every_schema_key_has_title_description_and_default_or_examples():
    assert missing_annotations(json.loads(schema_path().read_text())) == []


def test_reference_lists_every_top_level_and_field_key():
    text = reference_path().read_text()
    schema = json.loads(schema_path().read_text())
    for key in list(schema["properties"]) + list(schema["$defs"]["field"]["properties"]):
        assert f"| `{key}` |" in text, key


def test_every_spec_starts_with_the_schema_line():
    for spec in sorted((ROOT / "specs").rglob("*.yaml")):
        first = spec.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../../schemas/spec.schema.json", spec
        assert (spec.parent / first.split("=", 1)[1]).resolve() == schema_path()


def test_docs_links_resolve():
    pages = list((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def test_getting_started_commands_exist():
    """Every `syncrunner <command>` the guides show is a real command."""
    commands = set(main.list_commands(click.Context(main)))  # the lazily imported ones too
    assert {"run", "lint", "history", "health", "init", "docs"} <= commands
    assert all(main.get_command(click.Context(main), c) is not None for c in commands)
    for page in ("getting-started.md", "add-an-entity.md", "operations.md"):
        for cmd in re.findall(r"^\s*(?:\$ )?syncrunner ([a-z]+)", (ROOT / "docs" / page).read_text(), re.M):
            assert cmd in commands, f"docs/{page}: unknown command {cmd}"


def test_every_system_has_a_readme_row_and_a_docs_page():
    """Each specs/<crm>/ folder is one row of the README's Systems table, linking its docs/crm page."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Systems", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "`specs/" in line]
    folders = sorted(p.name for p in (ROOT / "specs").iterdir() if p.is_dir())
    assert len(folders) >= 11, folders
    for crm in folders:
        mine = [r for r in rows if f"`specs/{crm}/`" in r]
        assert len(mine) == 1, f"README Systems table: no single row for specs/{crm}/"
        link = re.search(r"\]\((docs/crm/[^)]+\.md)\)", mine[0])
        assert link and (ROOT / link.group(1)).exists(), f"README row of {crm}: no docs/crm page"
    assert len(rows) == len(folders), "README Systems table has a row without a specs folder"
