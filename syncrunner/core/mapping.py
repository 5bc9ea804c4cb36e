"""Field mapping, compiled once per spec: source record -> typed, validated target row.

This runs once per record, so it is the hot loop of every sync: each field is reduced to a tuple of
plain values and functions up front, plain column names are looked up directly, values that already
have the field's type skip their coercer, and record rules made only of comparisons, `is none`
tests and and/or/not are evaluated as Python closures instead of building a Jinja context per
record (anything else still goes through Jinja). Jinja is imported only to parse a spec's rules and
expressions: a mapping worker gets the rules already parsed (`rule_plans`), as plain data, and runs
without it when the spec has no expression fields and no rule that needs Jinja."""
from __future__ import annotations

import datetime as dt
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Callable
from decimal import Decimal
from zoneinfo import ZoneInfo

from syncrunner.core import coerce, validators
from syncrunner.core.coerce import DataError
from syncrunner.core.templatecheck import TemplateRefused
from syncrunner.spec.model import FieldSpec, Spec

_SIMPLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def plain_path(path: str) -> bool:
    """A plain name or dotted path (`id`, `properties.email`): read without jmespath."""
    return _SIMPLE.fullmatch(path) is not None


def make_getter(path: str) -> Callable[[dict], Any]:
    """Plain names and dotted paths get a direct lookup; anything else goes through jmespath."""
    if plain_path(path):
        parts = path.split(".")
        if len(parts) == 1:
            name = parts[0]
            return lambda rec: rec.get(name)

        def dotted(rec: dict) -> Any:
            cur: Any = rec
            for p in parts:
                if not isinstance(cur, dict):
                    return None
                cur = cur.get(p)
            return cur
        return dotted
    import jmespath  # only specs with JMESPath paths (HTTP sources) pay its import

    compiled = jmespath.compile(path)
    return compiled.search


@dataclass
class Warning_:
    field: str
    value: Any
    reason: str


@dataclass
class CompiledField:
    name: str
    get: Callable[[dict], Any]
    convert: Callable[[Any], Any]
    is_string: bool
    required: bool
    default: Any
    checks: list["Check"]
    on_invalid: str


@dataclass(frozen=True)
class InlineCheck:
    """A field check the compiled mapping writes inline: `ok` is a Python expression over `value`
    and `limit`; `reason(value)` builds the message only when it fails."""
    ok: str
    limit: Any
    reason: Callable[[Any], str]


Check = Callable[[Any], None] | InlineCheck


@dataclass
class Mapper:
    """Maps one source record; raises DataError (field, reason) for a record that must not land."""

    spec: Spec
    skip_validation: bool = False
    fields: list[CompiledField] = field(init=False)
    rules: list[tuple[Callable, str]] = field(init=False)
    warnings: list[Warning_] = field(default_factory=list)
    map: Callable[[dict], dict] = field(init=False, repr=False)   # record -> row, compiled per spec
    rule_plans: tuple | None = None   # rule_plans(spec), when parsed already (a mapping worker)

    def __post_init__(self) -> None:
        tz = self.spec.source.timezone
        self._offsets = coerce.DayOffsets(ZoneInfo(tz))  # shared by every datetime field
        self.fields = [self._compile(f, tz) for f in self.spec.fields.values()]
        self.rules = []
        if not self.skip_validation:
            plans = self.rule_plans if self.rule_plans is not None else rule_plans(self.spec)
            self.rules = [(plan_closure(plan) if plan is not None else _jinja_rule(r.rule), r.message)
                          for r, plan in zip(self.spec.rules, plans)]
        self._types = {cf.name: self.spec.fields[cf.name].type for cf in self.fields}
        self._plan = [(cf.name, _plain_name(self.spec.fields[cf.name]), cf.get,
                       _SAME_TYPE.get(self.spec.fields[cf.name].type), cf.convert, tuple(cf.checks),
                       cf.is_string, cf.required, cf.default, cf.on_invalid == "null" and not cf.required)
                      for cf in self.fields]
        self.map = self._generate()

    def _compile(self, f: FieldSpec, tz: str) -> CompiledField:
        if f.expr is not None:
            from syncrunner.core.templating import compile_expression
            expr = compile_expression(f.expr)
            get = lambda rec, _e=expr: _e(**rec)  # noqa: E731
        else:
            get = make_getter(f.source_path or f.name)
        checks: list[Callable[[Any], None]] = []
        if not self.skip_validation:
            checks += [validators.BUILTIN[v] for v in f.validators]
            if f.choices is not None:
                checks.append(_rule_check(set(f.choices).__contains__,
                                          lambda v, c=set(f.choices): f"{v!r} is not one of {sorted(map(str, c))}"))
            if f.regex:
                rx = re.compile(f.regex)
                checks.append(_rule_check(lambda v, r=rx: bool(r.fullmatch(str(v))),
                                          lambda v, r=rx: f"{v!r} does not match {r.pattern!r}"))
            if f.min is not None:
                checks.append(InlineCheck("value >= limit", f.min, lambda v, m=f.min: f"{v!r} is below the minimum {m}"))
            if f.max is not None:
                checks.append(InlineCheck("value <= limit", f.max, lambda v, m=f.max: f"{v!r} is above the maximum {m}"))
            if f.max_length is not None:
                checks.append(InlineCheck("len(value if value.__class__ is str else str(value)) <= limit",
                                          f.max_length, lambda v, m=f.max_length: f"longer than {m} characters"))
        return CompiledField(
            name=f.name, get=get,
            convert=coerce.coercer(f.type, tz=tz, precision=f.precision, scale=f.scale, offsets=self._offsets,
                                   number_format=f.number_format, date_format=f.date_format),
            is_string=f.type == "string", required=f.required, default=f.default,
            checks=checks, on_invalid=f.on_invalid)

    def project(self, names: list[str]) -> Callable[[dict], dict]:
        """A compiled mapping of just these fields, without record rules: e.g. a record's key and
        cursor, to decide whether the whole record needs mapping. Values nulled by on_invalid: null
        become None here (no warning is kept; the full mapping keeps it)."""
        return self._generate(set(names), rules=False, warn=False)

    def _generate(self, only: set[str] | None = None, *, rules: bool = True,
                  warn: bool = True) -> Callable[[dict], dict]:
        """Compile the spec's fields into one straight-line Python function, as dataclasses and
        namedtuple do: no per-field loop, tuple unpacking or branches on flags known in advance.
        Only repr()s of field names and record keys enter the source text; functions and defaults
        are passed in by name."""
        src = _Source({"DataError": DataError, "TemplateRefused": TemplateRefused, "Warning_": Warning_,
                       "mapper": self,
                       "rules": tuple(self.rules) if rules else (), "datetime": dt.datetime, "Decimal": Decimal,
                       "UTC": dt.timezone.utc, "OFFSETS": self._offsets})
        src.lines += ["def map_record(rec):", "    row = {}"]
        for i, plan in enumerate(self._plan):
            if only is None or plan[0] in only:
                _emit_field(src, i, plan, self._types[plan[0]], warn)
        if self.rules and rules:
            _emit_rules(src)
        src.emit(1, "return row")
        exec(compile("\n".join(src.lines), f"<mapping of {self.spec.name}>", "exec"), src.ns)  # noqa: S102
        return src.ns["map_record"]


@dataclass
class _Source:
    """The compiled mapping's source text, and the names (functions, defaults) it refers to."""
    ns: dict[str, Any]
    lines: list[str] = field(default_factory=list)

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def _emit_field(src: _Source, i: int, plan: tuple, kind: str, warn: bool) -> None:
    """One field: read `raw`, handle a missing value and the default, convert and check it."""
    name, key, get, same, convert, checks, is_string, required, default, null_on_invalid = plan
    src.ns.update({f"get{i}": get, f"convert{i}": convert, f"same{i}": same, f"default{i}": default})
    n = repr(name)
    _emit_read(src, i, n, key)

    def body(base: int, convert_lines: list[str]) -> None:
        _emit_checked(src, base, i, n, convert_lines, checks, is_string=is_string,
                      null_on_invalid=null_on_invalid, warn=warn)
    # The usual value (the field's own type, present, not blank) skips the missing-value and
    # default handling, which could not apply to it: the same result, fewer steps per field.
    fast = _FAST.get(kind)
    indent = 1
    if fast is not None:
        guard, lines = fast
        src.emit(1, f"if {guard}:")
        body(2, [line.replace("convert", f"convert{i}") for line in lines])
        src.emit(1, "else:")
        indent = 2
    blank = "" if is_string else " or (isinstance(raw, str) and not raw.strip())"
    src.emit(indent, f"if raw is None{blank}:")
    src.emit(indent + 1, f"raw = default{i}")
    src.emit(indent, "if raw is None or raw == '':" if required else "if raw is None:")
    src.emit(indent + 1, f"raise DataError({n}, 'required value is missing', raw)" if required
             else f"row[{n}] = None")
    src.emit(indent, "else:")
    body(indent + 1, _general_conversion(kind, i, same))


def _emit_read(src: _Source, i: int, n: str, key: str | None) -> None:
    """`raw` from the record: a plain key directly, an expression or path through its getter."""
    if key is not None:
        src.emit(1, f"raw = rec.get({key!r})")
        return
    src.emit(1, "try:")
    src.emit(2, f"raw = get{i}(rec)")
    src.emit(1, "except TemplateRefused:  # the sandbox stopped the spec's expression: fail the run")
    src.emit(2, "raise")
    src.emit(1, "except Exception as e:  # an expression failing on odd data is a data error")
    src.emit(2, f"raise DataError({n}, f'expression failed: {{e}}') from None")


def _emit_checked(src: _Source, base: int, i: int, n: str, convert_lines: list[str], checks: tuple, *,
                  is_string: bool, null_on_invalid: bool, warn: bool) -> None:
    """Convert `raw` to `value`, run the checks, store it (or the data error)."""
    src.emit(base, "try:")
    for line in convert_lines:
        src.emit(base + 1, line)
    depth = base + 1
    if is_string and checks:  # checks judge present values: an empty string has none
        src.emit(base + 1, "if value != '':")
        depth = base + 2
    for j, check in enumerate(checks):
        if isinstance(check, InlineCheck):
            src.ns[f"limit{i}_{j}"], src.ns[f"reason{i}_{j}"] = check.limit, check.reason
            ok = check.ok.replace("limit", f"limit{i}_{j}")
            src.emit(depth, f"if not ({ok}):")
            src.emit(depth + 1, f"raise ValueError(reason{i}_{j}(value))")
        else:
            src.ns[f"check{i}_{j}"] = check
            src.emit(depth, f"check{i}_{j}(value)")
    src.emit(base, "except (ValueError, TypeError, ArithmeticError) as e:")
    if null_on_invalid:
        if warn:
            src.emit(base + 1, f"mapper.warnings.append(Warning_({n}, raw, str(e)))")
        src.emit(base + 1, "value = None")
    else:
        src.emit(base + 1, f"raise DataError({n}, str(e), raw) from None")
    src.emit(base, f"row[{n}] = value")


def _general_conversion(kind: str, i: int, same: type | None) -> list[str]:
    """How any present value of the field converts (the fast path takes the usual ones)."""
    if kind == "datetime":  # a naive source timestamp on a day seen before: its offset is known
        return ["offset = OFFSETS.get(raw.toordinal()) if raw.__class__ is datetime "
                "and raw.tzinfo is None else None",
                f"value = convert{i}(raw) if offset is None else (raw - offset).replace(tzinfo=UTC)"]
    if kind == "boolean":  # 0/1 from a TINYINT, as coerce.to_boolean does it
        return [f"value = raw if raw.__class__ is bool else (raw == 1) if raw.__class__ is int "
                f"and (raw == 0 or raw == 1) else convert{i}(raw)"]
    if same is not None:
        return [f"value = raw if raw.__class__ is same{i} else convert{i}(raw)"]
    return [f"value = convert{i}(raw)"]


def _emit_rules(src: _Source) -> None:
    """The record rules, after every field: a rule that cannot be evaluated is a data error."""
    src.emit(1, "for rule, message in rules:")
    src.emit(2, "try:")
    src.emit(3, "ok = rule(row)")
    src.emit(2, "except TemplateRefused:")
    src.emit(3, "raise")
    src.emit(2, "except Exception as e:")
    src.emit(3, "raise DataError(None, f'rule failed to evaluate: {e}') from None")
    src.emit(2, "if not ok:")
    src.emit(3, "raise DataError(None, message)")


# Values of exactly these classes are what the field's coercer would return unchanged.
_SAME_TYPE: dict[str, type] = {"integer": int, "string": str, "boolean": bool}

# Per field type: the test for the usual raw value, and how it converts (`convert` is the field's
# coercer), exactly as the general path converts that value.
_FAST: dict[str, tuple[str, list[str]]] = {
    "integer": ("raw.__class__ is int", ["value = raw"]),
    "string": ("raw.__class__ is str and raw != ''", ["value = raw"]),
    "boolean": ("raw.__class__ is int and (raw == 0 or raw == 1)", ["value = raw == 1"]),
    "datetime": ("raw.__class__ is datetime and raw.tzinfo is None",
                 ["offset = OFFSETS.get(raw.toordinal())",
                  "value = convert(raw) if offset is None else (raw - offset).replace(tzinfo=UTC)"]),
    "decimal": ("raw.__class__ is Decimal", ["value = convert(raw)"]),
}


def _plain_name(f: FieldSpec) -> str | None:
    """The record key to read directly, when the field is a plain (undotted) column name."""
    if f.expr is not None:
        return None
    path = f.source_path or f.name
    return path if _SIMPLE.fullmatch(path) and "." not in path else None


def _jinja_rule(source: str) -> Callable[[dict], Any]:
    from syncrunner.core.templating import compile_expression
    expr = compile_expression(source)
    return lambda row: expr(**row)


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "lteq": operator.le, "gt": operator.gt,
    "gteq": operator.ge, "in": lambda a, b: a in b, "notin": lambda a, b: a not in b,
}


def rule_plans(spec: Spec) -> tuple:
    """Each record rule of the spec parsed into a plan (see rule_plan), None where Jinja must run it."""
    names = set(spec.fields)
    return tuple(rule_plan(r.rule, names) for r in spec.rules)


def rule_plan(source: str, names: set[str]) -> tuple | None:
    """The rule as nested tuples of plain values (picklable, no Jinja needed to run it), when it
    uses only field names, constants, lists, comparisons, `is none` and and/or/not: Jinja compiles
    exactly these to the same Python operations. None when the rule needs anything else."""
    import jinja2
    from jinja2.parser import Parser

    from syncrunner.core.templating import ENV
    try:
        parser = Parser(ENV, source, state="variable")
        node = parser.parse_expression()
        if not parser.stream.eos:
            return None
    except jinja2.TemplateSyntaxError:
        return None
    return _plan(node, names)


def _plan(node: Any, names: set[str]) -> tuple | None:
    from jinja2 import nodes
    if isinstance(node, nodes.Name) and node.ctx == "load" and node.name in names:
        return ("name", node.name)
    if isinstance(node, nodes.Const):
        return ("const", node.value)
    if isinstance(node, (nodes.List, nodes.Tuple)):
        items = tuple(_plan(i, names) for i in node.items)
        return None if None in items else ("list" if isinstance(node, nodes.List) else "tuple", items)
    if isinstance(node, nodes.Not):
        inner = _plan(node.node, names)
        return None if inner is None else ("not", inner)
    if isinstance(node, (nodes.And, nodes.Or)):
        left, right = _plan(node.left, names), _plan(node.right, names)
        if left is None or right is None:
            return None
        return ("and" if isinstance(node, nodes.And) else "or", left, right)
    if isinstance(node, nodes.Test) and node.name == "none" and not (
            node.args or node.kwargs or node.dyn_args or node.dyn_kwargs):
        inner = _plan(node.node, names)
        return None if inner is None else ("none", inner)
    if isinstance(node, nodes.Compare) and node.ops and all(op.op in _COMPARE for op in node.ops):
        first = _plan(node.expr, names)
        steps = tuple((op.op, _plan(op.expr, names)) for op in node.ops)
        if first is None or any(p is None for _, p in steps):
            return None
        return ("compare", first, steps)
    return None


def fast_rule(source: str, names: set[str]) -> Callable[[dict], Any] | None:
    """The rule as a closure over the row (see rule_plan), or None when Jinja must evaluate it."""
    plan = rule_plan(source, names)
    return None if plan is None else plan_closure(plan)


def plan_closure(plan: tuple) -> Callable[[dict], Any]:
    """A rule plan as a closure over the row."""
    kind = plan[0]
    if kind == "name":
        key = plan[1]
        return lambda r: r[key]
    if kind == "const":
        value = plan[1]
        return lambda r: value
    if kind in ("list", "tuple"):
        items = [plan_closure(i) for i in plan[1]]
        make = list if kind == "list" else tuple
        return lambda r: make([i(r) for i in items])
    if kind == "not":
        inner = plan_closure(plan[1])
        return lambda r: not inner(r)
    if kind in ("and", "or"):
        left, right = plan_closure(plan[1]), plan_closure(plan[2])
        if kind == "and":
            return lambda r: left(r) and right(r)
        return lambda r: left(r) or right(r)
    if kind == "none":
        inner = plan_closure(plan[1])
        return lambda r: inner(r) is None
    if kind == "compare":
        first = plan_closure(plan[1])
        steps = [(_COMPARE[op], plan_closure(p)) for op, p in plan[2]]
        if len(steps) == 1:
            (cmp, second), = steps
            return lambda r: cmp(first(r), second(r))

        def chained(r: dict) -> Any:  # a < b < c: Python's chained comparison
            left, result = first(r), True
            for cmp, get in steps:
                right = get(r)
                result = cmp(left, right)
                if not result:
                    return result
                left = right
            return result
        return chained
    raise ValueError(f"not a rule plan: {plan!r}")


def _rule_check(ok: Callable[[Any], bool], reason: Callable[[Any], str]) -> Callable[[Any], None]:
    """A field check whose message is only built when it fails (it is a hot path)."""
    def check(v: Any) -> None:
        if not ok(v):
            raise ValueError(reason(v))
    return check
