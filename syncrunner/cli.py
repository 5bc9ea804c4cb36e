"""The `syncrunner` command line."""
from __future__ import annotations

import sys

import click

from .lint import lint_paths


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="syncrunner")
def main() -> None:
    """Declarative CRM data sync: one YAML spec per entity, one generic runtime."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def lint(paths: tuple[str, ...]) -> None:
    """Validate specs (schema and semantic checks); prints file:line: key: message."""
    count, problems = lint_paths(list(paths))
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        click.echo(str(p), err=p.severity == "error")
    click.echo(f"{count} spec(s) checked, {len(errors)} error(s), {len(problems) - len(errors)} warning(s)")
    sys.exit(1 if errors else 0)
