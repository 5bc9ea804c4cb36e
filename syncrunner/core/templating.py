"""The one Jinja environment of syncrunner: SQL query templates, HTTP request templates, field
expressions and record rules.

Templates come from spec files, which come from repositories: they are untrusted. Every template is
first checked statically (templatecheck.py) and then compiled and rendered in Jinja's
ImmutableSandboxedEnvironment, which refuses the same things again at render time. The functions,
filters and tests of templatevocab.py are the whole vocabulary.

SQL templates see `since` / `until` as bind-parameter placeholders, never as values."""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Callable

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from syncrunner.core.templatecheck import TemplateRefused, refusals
from syncrunner.core.templatevocab import FILTERS, FUNCTIONS, TESTS

WINDOW_PARAMS = {"since": "sr_since", "until": "sr_until"}
# what an HTTP request (or tie_break) template sees: core/requests.py context()
REQUEST_VARIABLES = ("since", "until", "window", "since_exclusive", "tie_value", "after_key", "start_date",
                     "end_date", "params", "parent")
_QUOTED_PLACEHOLDER = re.compile(r"'[^']*:sr_(since|until)\b[^']*'|\"[^\"]*:sr_(since|until)\b[^\"]*\"")
MAX_SEQUENCE = 100_000   # longest string or list `*` may build
MAX_POWER_BITS = 4_096   # largest integer `**` may build


class SandboxedTemplates(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, narrowed to syncrunner's vocabulary: a private attribute raises at
    once (the stock sandbox returns an undefined value, which a ChainableUndefined would render as
    ''), only FUNCTIONS may be called, and `*`, `**` and `%` cannot build huge values."""

    intercepted_binops = frozenset({"*", "**", "%"})
    callables = frozenset(h.func for h in FUNCTIONS.values())

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise TemplateRefused(f"template refused: access to attribute {attribute!r} of a "
                              f"{type(obj).__name__} value is not allowed")

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        if obj not in self.callables:
            name = getattr(obj, "_undefined_name", None) if isinstance(obj, jinja2.Undefined) else \
                getattr(obj, "__name__", type(obj).__name__)
            raise TemplateRefused(f"template refused: calling {name!r} is not allowed; templates may call "
                                  f"only {', '.join(f'{f}()' for f in sorted(FUNCTIONS))}")
        return context.call(obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `*`, `**` and `%` uses that would take the process's memory or CPU."""
    if operator == "%" and isinstance(left, str):
        raise TemplateRefused("template refused: '%' string formatting is not allowed; use filters")
    if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 \
            and right * left.bit_length() > MAX_POWER_BITS:
        raise TemplateRefused(f"template refused: {left} ** {right} is too large")
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_SEQUENCE:
                raise TemplateRefused(f"template refused: a sequence repeated {n} times is too long "
                                      f"(more than {MAX_SEQUENCE} items)")


def make_env(autoescape: bool = False) -> SandboxedTemplates:
    env = SandboxedTemplates(undefined=jinja2.ChainableUndefined, autoescape=autoescape, keep_trailing_newline=True)
    env.globals.clear()  # no range, dict, lipsum, cycler, joiner, namespace
    env.globals.update({name: h.func for name, h in FUNCTIONS.items()})
    env.filters = {name: h.func for name, h in FILTERS.items()}
    env.tests = {name: h.func for name, h in TESTS.items()}
    return env


ENV = make_env()
# XML request bodies: every printed value is escaped (& < > " '), so a value cannot add elements;
# the vocabulary has no `safe` filter to undo it
XML_ENV = make_env(autoescape=True)


class Placeholder(str):
    """Renders as `:name` so the SQL text carries a bind parameter, not the value."""


def _refusals(node: Any) -> list[str]:
    return refusals(node, set(FUNCTIONS), set(FILTERS), set(TESTS))


def parse_expression(source: str) -> Any:
    """A Jinja expression's syntax tree, parsed as Environment.compile_expression parses it."""
    from jinja2.parser import Parser

    parser = Parser(ENV, source, state="variable")
    node = parser.parse_expression()
    if not parser.stream.eos:
        raise jinja2.TemplateSyntaxError("chunk after expression", parser.stream.current.lineno)
    return node


def _refuse(problems: list[str]) -> None:
    if problems:
        raise TemplateRefused("template refused: " + "; ".join(problems))


def compile_expression(source: str) -> Callable[..., Any]:
    """Check and compile a Jinja expression once; call the result with the record as keyword
    context. Raises TemplateRefused for an expression the static check refuses."""
    _refuse(_refusals(parse_expression(source)))
    return ENV.compile_expression(source, undefined_to_none=True)


def compile_text(source: str) -> jinja2.Template:
    """Check and compile a Jinja template (raises TemplateRefused when refused)."""
    _refuse(_refusals(ENV.parse(source)))
    return ENV.from_string(source)


def compile_markup(source: str) -> jinja2.Template:
    """Check and compile an XML body template: like compile_text, values XML-escaped."""
    _refuse(_refusals(XML_ENV.parse(source)))
    return XML_ENV.from_string(source)


@lru_cache(maxsize=64)
def render_sql(template: str, windowed: bool) -> str:
    """Render a query template; the window enters only as :sr_since / :sr_until bind parameters.
    Cached: the text depends on nothing else, and a source builds two queries per chunk (Jinja
    compiling the template anew each time cost ~1 ms of the reading thread per query)."""
    ctx = {k: Placeholder(f":{v}") for k, v in WINDOW_PARAMS.items()}
    ctx["window"] = windowed
    return compile_text(template).render(**ctx)


def _syntax_problem(e: jinja2.TemplateSyntaxError, what: str) -> str:
    line = f" (template line {e.lineno})" if e.lineno and e.lineno > 1 else ""
    return f"{what} does not compile{line}: {e.message}"


def _parsed(source: str, what: str, variables: tuple[str, ...]) -> tuple[Any, list[str]]:
    """A template's AST and why it is refused or broken: syntax, the sandbox's static refusals,
    variables other than `variables` (and the functions). The AST is None when it does not parse."""
    try:
        ast = ENV.parse(source)
    except jinja2.TemplateSyntaxError as e:
        return None, [_syntax_problem(e, what)]
    problems = [f"template refused: {p}" for p in _refusals(ast)]
    if problems:
        return ast, problems
    try:
        unknown = meta.find_undeclared_variables(ast) - set(variables) - set(FUNCTIONS)
    except jinja2.TemplateSyntaxError as e:
        return ast, [_syntax_problem(e, what)]
    if unknown:
        return ast, [f"{what} uses unknown variables {sorted(unknown)}; only {', '.join(variables)} exist"]
    return ast, []


def sql_template_problems(template: str) -> list[str]:
    """Why a query template is unsafe or broken (empty when fine). It is rendered (with
    placeholders) only when the static checks pass."""
    ast, problems = _parsed(template, "query template", (*WINDOW_PARAMS, "window"))
    if ast is None or problems:
        return problems
    for out in ast.find_all(jinja2.nodes.Output):
        for node in out.nodes:
            if isinstance(node, jinja2.nodes.TemplateData):
                continue
            if not (isinstance(node, jinja2.nodes.Name) and node.name in WINDOW_PARAMS):
                problems.append("query template prints an expression other than {{ since }} / {{ until }}; "
                                "values must travel as bind parameters")
    if problems:
        return list(dict.fromkeys(problems))
    for windowed in (True, False):
        try:
            rendered = render_sql(template, windowed)
        except Exception as e:  # noqa: BLE001 - any render error is a spec problem
            problems.append(f"query template fails to render: {e}")
            break
        if _QUOTED_PLACEHOLDER.search(rendered):
            problems.append("{{ since }} / {{ until }} must not be inside quotes: they are bind parameters")
            break
    return problems


def template_problems(source: str, variables: tuple[str, ...] = REQUEST_VARIABLES) -> list[str]:
    """Why a request template is refused or broken (empty when fine); renders nothing."""
    return _parsed(source, "template", variables)[1]


def expression_problems(source: str) -> list[str]:
    """Why an expression (field `expr`, `validate` rule) is refused or broken; evaluates nothing."""
    try:
        node = parse_expression(source)
    except jinja2.TemplateSyntaxError as e:
        return [f"expression does not compile: {e.message}"]
    problems = [f"template refused: {p}" for p in _refusals(node)]
    if not problems:
        try:
            ENV.compile_expression(source)  # compiles; runs nothing
        except jinja2.TemplateSyntaxError as e:
            problems.append(f"expression does not compile: {e.message}")
    return problems
