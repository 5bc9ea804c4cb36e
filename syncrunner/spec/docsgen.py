"""Generate docs/spec-reference.md from schemas/spec.schema.json and the template vocabulary.

The schema is the authority for the spec format (titles, descriptions, defaults, examples live in
it, where editors show them too); core/templatevocab.py is the authority for what templates may
use. The Markdown page is derived from both, and a test fails when it is stale.

    python -m syncrunner.spec.docsgen            # rewrite docs/spec-reference.md
    python -m syncrunner.spec.docsgen --check    # exit 1 if it is out of date
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from syncrunner.spec.load import schema_path

HEADER = """<!-- Generated from schemas/spec.schema.json and syncrunner/core/templatevocab.py by `python -m syncrunner.spec.docsgen`; do not edit. -->
# Spec reference

Every key of an entity spec (`specs/<crm>/<entity>.yaml`). The JSON Schema
[`schemas/spec.schema.json`](../schemas/spec.schema.json) is the authority: this page is generated
from it, and editors that read the spec's first line
(`# yaml-language-server: $schema=../../schemas/spec.schema.json`) show the same titles,
descriptions, defaults and examples while you type. `syncrunner lint` checks a spec against it,
and warns (`file:line: $schema: warning: ...`, naming the path that would resolve) when that
comment's relative path does not lead to the schema: editors would then silently stop validating.
A warning, not an error, since a run never reads the comment. URLs there are not fetched.
Any string value may use `${VAR}` or `${VAR:-default}` to read the environment.
"""


@dataclass
class Section:
    title: str
    path: str                       # YAML path, e.g. source.auth
    description: str = ""
    rows: list[list[str]] = field(default_factory=list)
    columns: tuple[str, ...] = ("key", "type", "required", "default", "description")


class Generator:
    def __init__(self, schema: dict):
        self.schema = schema
        self.sections: list[Section] = []

    # -- schema helpers --------------------------------------------------------------------------
    def resolve(self, node: dict) -> dict:
        """Follow $ref, letting the referring node's own annotations win (2020-12 semantics)."""
        seen = 0
        while "$ref" in node and seen < 10:
            target = self.schema
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            seen += 1
        return node

    def lookup(self, ref: str) -> dict:
        target = self.schema
        for part in ref.lstrip("#/").split("/"):
            target = target[part]
        return target

    def properties(self, node: dict) -> dict[str, dict]:
        """A node's own properties: follow $ref only until a node that declares properties, so a
        base (`$ref: common_source` beside them) is not repeated in every variant."""
        for _ in range(10):
            if "properties" in node or "$ref" not in node:
                return dict(node.get("properties", {}))
            node = self.lookup(node["$ref"])
        return {}

    def shared_base(self, node: dict) -> dict | None:
        """The base every if/then variant builds on (`common_source`): its keys belong to the parent."""
        bases = set()
        for branch in node.get("allOf", []):
            then = branch.get("then", {})
            then = self.lookup(then["$ref"]) if "$ref" in then else then
            bases.add(then.get("$ref"))
        return self.lookup(bases.pop()) if len(bases) == 1 and None not in bases else None

    def type_text(self, node: dict) -> str:
        node = self.resolve(node)
        if "const" in node:
            return f"`{json.dumps(node['const'])}`"
        if "enum" in node:
            return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
        if "oneOf" in node and "type" not in node:
            return " or ".join(dict.fromkeys(self.type_text(v) for v in node["oneOf"]))
        t = node.get("type")
        if isinstance(t, list):
            return " or ".join(t)
        if t == "array":
            items = node.get("items")
            return f"list of {self.type_text(items)}" if items else "list"
        if t == "object" and "additionalProperties" in node and isinstance(node["additionalProperties"], dict) \
                and not node.get("properties"):
            return f"mapping of name to {self.type_text(node['additionalProperties'])}"
        return t or "any"

    # -- walking ---------------------------------------------------------------------------------
    def row(self, name: str, node: dict, required: set[str]) -> list[str]:
        node = self.resolve(node)
        desc = node.get("description", "")
        title = node.get("title")
        text = f"**{title}.** {desc}" if title else desc
        if "examples" in node:
            text += " Example: " + ", ".join(f"`{_inline(e)}`" for e in node["examples"])
        default = f"`{_inline(node['default'])}`" if "default" in node else ""
        return [f"`{name}`", self.type_text(node), "yes" if name in required else "", default, text]

    def walk(self, title: str, path: str, node: dict, description: str | None = None) -> None:
        node = self.resolve(node)
        props = self.properties(node)
        required = set(node.get("required", []))
        section = Section(title, path, description if description is not None else node.get("description", ""))
        self.sections.append(section)
        nested: list[tuple[str, str, dict]] = []
        base = self.shared_base(node)
        if base is not None:
            props.update(base.get("properties", {}))
        for name, sub in props.items():
            section.rows.append(self.row(name, sub, required))
            nested += self.children(f"{path}.{name}" if path else name, sub)
        for child_title, child_path, child in nested:
            self.walk(child_title, child_path, child)
        for variant_title, variant_path, variant, desc in self.variants(path, node):
            self.walk(variant_title, variant_path, variant, desc)

    def children(self, path: str, sub: dict) -> list[tuple[str, str, dict]]:
        """Object-valued keys get a section of their own."""
        node = self.resolve(sub)
        title = node.get("title") or path
        if node.get("properties") and not node.get("oneOf") and not node.get("allOf"):
            return [(f"{title} (`{path}`)", path, node)]
        if (node.get("oneOf") or node.get("allOf")) and node.get("properties"):
            return [(f"{title} (`{path}`)", path, node)]
        if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict) and \
                self.resolve(node["additionalProperties"]).get("properties"):
            return [(f"{self.resolve(node['additionalProperties']).get('title', 'Entry')} (`{path}.<name>`)",
                     f"{path}.<name>", node["additionalProperties"])]
        if node.get("type") == "array" and isinstance(node.get("items"), dict) and \
                self.resolve(node["items"]).get("properties"):
            return [(f"{title}: each item (`{path}[]`)", f"{path}[]", node["items"])]
        for v in node.get("oneOf", []):  # e.g. deletes: "none" or an object
            if self.resolve(v).get("properties"):
                return [(f"{title} (`{path}`)", path, v)]
        return []

    def variants(self, path: str, node: dict) -> list[tuple[str, str, dict, str]]:
        """oneOf branches and if/then branches that add keys: one section each, named by their tag."""
        out = []
        for branch in node.get("oneOf", []):
            b = self.resolve(branch)
            props = self.properties(b)
            tag = _tag(props)
            if tag and len(props) > 1:
                out.append((f"`{path}` with {tag}", path, b, b.get("description", "")))
            elif not tag and props:
                out.append((f"`{path}` as a mapping", path, b, b.get("description", "")))
        for branch in node.get("allOf", []):
            then = branch.get("then")
            cond = self.properties(branch.get("if", {}))
            if then and cond:
                t = self.resolve(then)
                tag = _tag(cond)
                desc = t.get("description", "") or f"Keys of a {tag} source, besides those of `{path}` above."
                out.append((f"`{path}` with {tag}", path, t, desc))
        return out

    def render(self) -> str:
        self.walk("Top level", "", self.schema)
        self.sections.append(template_section())
        lines = [HEADER]
        lines.append("## Contents\n")
        for s in self.sections:
            lines.append(f"- [{_plain(s.title)}](#{_anchor(s.title)})")
        for s in self.sections:
            lines.append("")
            lines.append(f"## {s.title}")
            lines.append("")
            if s.description:
                lines.append(s.description)
                lines.append("")
            if s.rows:
                lines.append("| " + " | ".join(s.columns) + " |")
                lines.append("|" + " --- |" * len(s.columns))
                for r in s.rows:
                    lines.append("| " + " | ".join(_cell(c) for c in r) + " |")
        return "\n".join(lines).rstrip() + "\n"


TEMPLATES = """\
Query templates, HTTP request strings (`path`, `params`, `headers`, `json`), field `expr` and
`validate` rules are Jinja, compiled and rendered in Jinja's immutable sandbox. `syncrunner lint`
(and every `plan` and `run`, which load a spec the same way) checks each one before anything is
rendered and refuses, with `file:line: key: message`: attribute or item access to a name starting
with `_` (`x.__class__`, `x['__globals__']`) or to a Python internal (`mro`); subscripts other than
a constant or a name (`x['key']`, `x[0]`, `x[name]`); calls of anything but the functions below
(no methods: use the filters); filters and tests not listed below; statements other than
`{% if %}`, `{% for %}` and `{% set %}` (expressions have none). At render time the sandbox refuses
the same things again, and `*`, `**` and `%` that would build huge values."""


def template_section() -> Section:
    """The template vocabulary, as a section of the reference."""
    from syncrunner.core.templatevocab import FILTERS, FUNCTIONS, TESTS

    section = Section("Templates", "", TEMPLATES, columns=("name", "kind", "usage", "what it gives"))
    for kind, table in (("function", FUNCTIONS), ("filter", FILTERS), ("test", TESTS)):
        for name, helper in table.items():
            section.rows.append([f"`{name}`", kind, f"`{helper.usage}`", helper.doc])
    return section


def _tag(props: dict) -> str | None:
    for key in ("kind", "type", "mode"):
        p = props.get(key, {})
        if "const" in p:
            return f"{key}: {p['const']}"
        if "enum" in p and len(p["enum"]) <= 3:
            return f"{key}: " + " / ".join(map(str, p["enum"]))
    return None


def _inline(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _plain(title: str) -> str:
    return title.replace("`", "")


def _anchor(title: str) -> str:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces to hyphens."""
    out = []
    for ch in _plain(title).lower():
        if ch.isalnum() or ch in "-_":
            out.append(ch)
        elif ch == " ":
            out.append("-")
    return "".join(out)


def generate(schema_file: Path | None = None) -> str:
    return Generator(json.loads((schema_file or schema_path()).read_text())).render()


def reference_path() -> Path:
    return Path(__file__).resolve().parents[2] / "docs" / "spec-reference.md"


@click.command("docs", hidden=True)
@click.option("--check", is_flag=True, help="Exit 1 if docs/spec-reference.md is out of date; write nothing.")
def docs_command(check: bool) -> None:
    """Regenerate docs/spec-reference.md from the JSON Schema."""
    sys.exit(main_docs(check))


def main_docs(check: bool) -> int:
    text, path = generate(), reference_path()
    current = path.read_text() if path.exists() else None
    if check:
        if current != text:
            click.echo(f"{path} is out of date: run `python -m syncrunner.spec.docsgen`", err=True)
            return 1
        click.echo(f"{path} is up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    click.echo(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main_docs("--check" in sys.argv[1:]))


def missing_annotations(schema: dict) -> list[str]:
    """Keys of the spec format lacking a title, a description, or a default/examples/enum/const
    (what editors show while completing). Discriminator constants inside variants (`kind: sql`)
    repeat their parent's documented key and are exempt."""
    gen = Generator(schema)
    problems: list[str] = []

    def visit(node: dict, path: str, depth: int = 0, variant: bool = False) -> None:
        if depth > 12 or not isinstance(node, dict):
            return
        for name, sub in gen.properties(node).items():
            p = f"{path}.{name}" if path else name
            r = gen.resolve(sub)
            if variant and set(r) <= {"const", "enum", "description", "type"} and {"const", "enum"} & set(r):
                continue
            for need in ("title", "description"):
                if need not in r:
                    problems.append(f"{p}: no {need}")
            if not ({"default", "examples", "enum", "const"} & set(r)):
                problems.append(f"{p}: no default or examples")
            visit(sub, p, depth + 1)
            for key in ("items", "additionalProperties"):
                if isinstance(r.get(key), dict):
                    visit(r[key], f"{p}[]", depth + 1)
        r = gen.resolve(node)
        for branch in r.get("oneOf", []) + [b.get("then", {}) for b in r.get("allOf", [])]:
            visit(branch, path, depth + 1, variant=True)
        base = gen.shared_base(r)
        if base is not None:
            visit(base, path, depth + 1)

    visit(schema, "")
    return list(dict.fromkeys(problems))
