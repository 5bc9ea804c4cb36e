"""Spec-declared run parameters (`params:`): typed values a run sets with `--param NAME=VALUE`.

A parameter is declared in the spec (type, default, allowed values) and read by request
templates as `params.NAME`. The same reading serves the command line (text) and lint (the YAML
default and choices), so a value the CLI would refuse is refused by lint too. A value other than
the default narrows the fetch (unless the parameter says `narrows: false`): such a run must not
sweep deletes, resume a run made with other values, or set where the next delta window starts."""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any, Iterable

PARAM_TYPES = ("string", "integer", "number", "boolean", "date", "list")
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


class ParamError(ValueError):
    """A parameter value that cannot be used (wrong type, not among the choices, undeclared)."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    default: Any = None
    choices: tuple | None = None
    description: str = ""
    narrows: bool = True


def _scalar(type_: str, raw: Any) -> Any:
    """One value of `type_` from CLI text or a YAML value."""
    text = str(raw).strip() if not isinstance(raw, (bool, int, float, dt.date)) else None
    if type_ == "string":
        return str(raw)
    if type_ == "boolean":
        if isinstance(raw, bool):
            return raw
        if text is not None and text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ParamError(f"{raw!r} is not a boolean (true/false)")
    if type_ == "integer":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        try:
            return int(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ParamError(f"{raw!r} is not an integer") from None
    if type_ == "number":
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return raw
        try:
            return float(text)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ParamError(f"{raw!r} is not a number") from None
    if type_ == "date":
        if isinstance(raw, dt.date) and not isinstance(raw, dt.datetime):
            return raw
        try:
            return dt.date.fromisoformat(str(text))
        except ValueError:
            raise ParamError(f"{raw!r} is not a date (YYYY-MM-DD)") from None
    raise ParamError(f"unknown parameter type {type_!r}")


def coerce(param: ParamSpec, raw: Any) -> Any:
    """The typed value of `raw` for `param` (None stays None), checked against its choices."""
    if raw is None:
        return [] if param.type == "list" else None
    if param.type == "list":
        items = raw if isinstance(raw, (list, tuple)) else [s for s in str(raw).split(",")]
        value: Any = [str(s).strip() for s in items if str(s).strip()]
        checked = value
    else:
        value = _scalar(param.type, raw)
        checked = [value]
    if param.choices is not None:
        bad = [v for v in checked if v not in param.choices]
        if bad:
            raise ParamError(f"{bad[0]!r} is not one of {', '.join(map(str, param.choices))}")
    return value


def from_data(data: Any) -> dict[str, ParamSpec]:
    """The declarations of a spec's (schema-valid) `params:` mapping."""
    out = {}
    for name, d in (data or {}).items():
        choices = tuple(d["choices"]) if "choices" in d else None
        if choices is not None and d["type"] != "string":
            choices = tuple(_scalar("string" if d["type"] == "list" else d["type"], c) for c in choices)
        out[name] = ParamSpec(name, d["type"], d.get("default"), choices, d.get("description", ""),
                              bool(d.get("narrows", True)))
    return out


def defaults(params: dict[str, ParamSpec]) -> dict[str, Any]:
    return {name: coerce(p, p.default) for name, p in params.items()}


def parse_assignments(texts: Iterable[str]) -> dict[str, str]:
    """`--param NAME=VALUE` options -> {NAME: VALUE}; the last one of a name wins."""
    out = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise ParamError(f"--param {text!r}: expected NAME=VALUE")
        out[name.strip()] = value
    return out


def apply(specs: list, given: dict[str, str]) -> list:
    """Each spec with the values in effect (`param_values`): its defaults, overridden by the
    `--param`s it declares. A `--param` no spec declares, or a bad value, raises ParamError."""
    declared = {name for s in specs for name in s.params}
    unknown = sorted(set(given) - declared)
    if unknown:
        names = ", ".join(sorted(declared)) or "none"
        raise ParamError(f"--param {unknown[0]}: no spec of this run declares a parameter '{unknown[0]}' "
                         f"(declared: {names})")
    out = []
    for spec in specs:
        values = defaults(spec.params)
        for name, text in given.items():
            if name in spec.params:
                try:
                    values[name] = coerce(spec.params[name], text)
                except ParamError as e:
                    raise ParamError(f"--param {name}={text}: {e} ({spec.path}: params.{name})") from None
        out.append(dataclasses.replace(spec, param_values=values))
    return out


def narrowing(params: dict[str, ParamSpec], values: dict[str, Any]) -> list[str]:
    """`NAME=VALUE` of each parameter whose value narrows the fetch (differs from its default)."""
    out = []
    for name, p in params.items():
        value = values.get(name, coerce(p, p.default))
        if p.narrows and value != coerce(p, p.default):
            out.append(f"{name}={show(value)}")
    return out


def show(value: Any) -> str:
    """A value as `--param` would take it."""
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value.isoformat() if isinstance(value, dt.date) else value)


def as_config(values: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe values for SyncHistory.configuration and checkpoints."""
    return {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in values.items()}
