"""The static check every template passes before it is compiled or rendered.

A spec is text from a repository, and `syncrunner lint` runs on pull requests: a template must not be
able to reach Python's internals. Jinja's sandbox (templating.py) stops that at render time; this
check refuses it earlier, from the parsed template alone, so nothing is ever rendered from a
template that tries. What a template may use is an allow-list (templating.FUNCTIONS, FILTERS,
TESTS): attribute access to names starting with `_`, subscripts other than a constant or a name,
calls of anything but the listed functions, unlisted filters and tests, and every statement other
than if/for/set are refused.

No Jinja import at module level: a mapping worker imports TemplateRefused without Jinja."""
from __future__ import annotations

from typing import Any, Iterator


class TemplateRefused(Exception):
    """A template tried something templates may not do (raised before or while rendering)."""


# Attributes Jinja's sandbox treats as internal although they do not start with "_".
_INTERNAL_ATTRIBUTES = frozenset({"mro", "gi_frame", "gi_code", "cr_frame", "cr_code", "ag_code", "ag_frame",
                                  "f_globals", "f_locals", "f_builtins", "f_code", "tb_frame"})
STATEMENTS = ("if", "for", "set")  # what a template (not an expression) may contain besides text and {{ }}


def refusals(node: Any, functions: set[str], filters: set[str], tests: set[str]) -> list[str]:
    """Why a parsed template or expression is refused (empty when allowed). Jinja nodes only."""
    from jinja2 import nodes

    allowed = (nodes.Template, nodes.Output, nodes.TemplateData, nodes.If, nodes.For, nodes.Assign,
               nodes.Name, nodes.Const, nodes.List, nodes.Tuple, nodes.Dict, nodes.Pair, nodes.CondExpr,
               nodes.And, nodes.Or, nodes.Not, nodes.Neg, nodes.Pos, nodes.BinExpr, nodes.Concat,
               nodes.Compare, nodes.Operand, nodes.Filter, nodes.Test, nodes.Call, nodes.Getattr,
               nodes.Getitem, nodes.Slice, nodes.Keyword)
    out: list[str] = []
    for n in _walk(node):
        where = f" (template line {n.lineno})" if (getattr(n, "lineno", None) or 1) > 1 else ""
        if not isinstance(n, allowed):
            out.append(f"{_statement_name(n)} is not allowed in templates; "
                       f"only {', '.join(STATEMENTS)} statements and expressions{where}")
        elif isinstance(n, nodes.Getattr) and _private(n.attr):
            out.append(f"attribute access to '{n.attr}' is refused: names starting with '_' "
                       f"(and Python internals) are private{where}")
        elif isinstance(n, nodes.Getitem):
            out += [m + where for m in _subscript_problems(n.arg)]
        elif isinstance(n, nodes.Call) and not (isinstance(n.node, nodes.Name) and n.node.name in functions):
            out.append(f"calling {_describe(n.node)} is refused: templates may call only "
                       f"{', '.join(f'{f}()' for f in sorted(functions))}{where}")
        elif isinstance(n, nodes.Filter) and n.name not in filters:
            out.append(f"filter '{n.name}' is not available; filters: {', '.join(sorted(filters))}{where}")
        elif isinstance(n, nodes.Filter) and any(k.key == "attribute" for k in n.kwargs):
            out.append(f"filter '{n.name}' with attribute= is refused (it reads attributes by name){where}")
        elif isinstance(n, nodes.Test) and n.name not in tests:
            out.append(f"test '{n.name}' is not available; tests: {', '.join(sorted(tests))}{where}")
        elif isinstance(n, nodes.For) and n.recursive:
            out.append(f"recursive loops are not allowed in templates{where}")
    return list(dict.fromkeys(out))


def _walk(node: Any) -> Iterator[Any]:
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child)


def _private(name: str) -> bool:
    return name.startswith("_") or name in _INTERNAL_ATTRIBUTES


def _subscript_problems(arg: Any) -> list[str]:
    from jinja2 import nodes

    if isinstance(arg, nodes.Const):
        if isinstance(arg.value, str) and _private(arg.value):
            return [f"item access to '{arg.value}' is refused: names starting with '_' "
                    f"(and Python internals) are private"]
        return []
    if isinstance(arg, (nodes.Name, nodes.Slice)) or (
            isinstance(arg, nodes.Neg) and isinstance(arg.node, nodes.Const)):
        return []
    return ["computed subscripts are refused: write x['key'], x[0] or x[name]"]


def _describe(node: Any) -> str:
    from jinja2 import nodes

    if isinstance(node, nodes.Name):
        return f"'{node.name}'"
    if isinstance(node, nodes.Getattr):
        return f"method '{node.attr}'"
    return "a computed value"


def _statement_name(node: Any) -> str:
    names = {"Macro": "{% macro %}", "CallBlock": "{% call %}", "FilterBlock": "{% filter %}",
             "With": "{% with %}", "Block": "{% block %}", "Include": "{% include %}",
             "Import": "{% import %}", "FromImport": "{% from ... import %}", "Extends": "{% extends %}",
             "AssignBlock": "{% set %}...{% endset %}", "NSRef": "namespace assignment",
             "ExprStmt": "{% do %}", "Break": "{% break %}", "Continue": "{% continue %}"}
    kind = type(node).__name__
    return names.get(kind, kind)
