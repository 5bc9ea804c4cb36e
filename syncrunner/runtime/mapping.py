"""Field mapping, compiled once per spec: source record -> typed, validated target row."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import jmespath

from ..spec import FieldSpec, Spec
from . import coerce, validators
from .coerce import DataError
from .templating import compile_expression

_SIMPLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def make_getter(path: str) -> Callable[[dict], Any]:
    """Plain names and dotted paths get a direct lookup; anything else goes through jmespath."""
    if _SIMPLE.fullmatch(path):
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
    checks: list[Callable[[Any], None]]
    on_invalid: str


@dataclass
class Mapper:
    """Maps one source record; raises DataError (field, reason) for a record that must not land."""

    spec: Spec
    skip_validation: bool = False
    fields: list[CompiledField] = field(init=False)
    rules: list[tuple[Callable, str]] = field(init=False)
    warnings: list[Warning_] = field(default_factory=list)

    def __post_init__(self) -> None:
        tz = self.spec.source.timezone
        self.fields = [self._compile(f, tz) for f in self.spec.fields.values()]
        self.rules = [] if self.skip_validation else [
            (compile_expression(r.rule), r.message) for r in self.spec.rules]

    def _compile(self, f: FieldSpec, tz: str) -> CompiledField:
        if f.expr is not None:
            expr = compile_expression(f.expr)
            get = lambda rec, _e=expr: _e(**rec)  # noqa: E731
        else:
            get = make_getter(f.source_path or f.name)
        checks: list[Callable[[Any], None]] = []
        if not self.skip_validation:
            checks += [validators.BUILTIN[v] for v in f.validators]
            if f.choices is not None:
                choices = set(f.choices)
                checks.append(lambda v, c=choices: _check(v in c, f"{v!r} is not one of {sorted(map(str, c))}"))
            if f.regex:
                rx = re.compile(f.regex)
                checks.append(lambda v, r=rx: _check(bool(r.fullmatch(str(v))), f"{v!r} does not match {r.pattern!r}"))
            if f.min is not None:
                checks.append(lambda v, m=f.min: _check(v >= m, f"{v!r} is below the minimum {m}"))
            if f.max is not None:
                checks.append(lambda v, m=f.max: _check(v <= m, f"{v!r} is above the maximum {m}"))
            if f.max_length is not None:
                checks.append(lambda v, m=f.max_length: _check(len(str(v)) <= m, f"longer than {m} characters"))
        return CompiledField(
            name=f.name, get=get,
            convert=coerce.coercer(f.type, tz=tz, precision=f.precision, scale=f.scale),
            is_string=f.type == "string", required=f.required, default=f.default,
            checks=checks, on_invalid=f.on_invalid)

    def map(self, rec: dict) -> dict:
        row: dict[str, Any] = {}
        for cf in self.fields:
            try:
                raw = cf.get(rec)
            except Exception as e:  # noqa: BLE001 - an expression failing on odd data is a data error
                raise DataError(cf.name, f"expression failed: {e}") from None
            if raw is None or (raw == "" and not cf.is_string) or (isinstance(raw, str) and not raw.strip() and not cf.is_string):
                raw = cf.default
            if raw is None or (cf.required and raw == ""):
                if cf.required:
                    raise DataError(cf.name, "required value is missing", raw)
                row[cf.name] = None
                continue
            try:
                value = cf.convert(raw)
                for check in cf.checks:
                    check(value)
            except (ValueError, TypeError, ArithmeticError) as e:
                if cf.on_invalid == "null" and not cf.required:
                    self.warnings.append(Warning_(cf.name, raw, str(e)))
                    row[cf.name] = None
                    continue
                raise DataError(cf.name, str(e), raw) from None
            row[cf.name] = value
        for rule, message in self.rules:
            try:
                ok = rule(**row)
            except Exception as e:  # noqa: BLE001
                raise DataError(None, f"rule failed to evaluate: {e}") from None
            if not ok:
                raise DataError(None, message)
        return row


def _check(ok: bool, reason: str) -> None:
    if not ok:
        raise ValueError(reason)
