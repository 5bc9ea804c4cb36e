"""What a spec is once loaded: plain dataclasses (Spec, FieldSpec, ...) and the located Problem
that every check reports. No loading, no I/O: a mapping worker unpickles these."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Mapping

from syncrunner.spec.params import narrowing

FIELD_TYPES = ("string", "integer", "decimal", "boolean", "date", "datetime", "time", "json")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    key: str
    message: str
    severity: str = "error"
    kind: str = "spec"  # "env": a ${VAR} the environment does not set (how the command was called)

    def __str__(self) -> str:
        tag = "" if self.severity == "error" else f"{self.severity}: "
        return f"{self.file}:{self.line}: {self.key}: {tag}{self.message}"


class SpecError(Exception):
    """A spec that cannot be used; carries every located problem."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    @property
    def missing_env(self) -> bool:
        """An environment variable the spec needs is not set: a usage error, not a broken spec."""
        return any(p.kind == "env" for p in self.problems)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    source_path: str | None = None
    expr: str | None = None
    required: bool = False
    default: Any = None
    validators: tuple[str, ...] = ()
    choices: tuple | None = None
    regex: str | None = None
    min: float | None = None
    max: float | None = None
    max_length: int | None = None
    precision: int = 18
    scale: int = 4
    on_invalid: str = "reject"
    number_format: str | None = None  # decimal mark of numbers read as formatted text; None: plain
    date_format: str | None = None    # strptime format of dates read as text; None: ISO 8601


@dataclass(frozen=True)
class Rule:
    rule: str
    message: str


@dataclass
class SourceSpec:
    kind: str
    key: list[str]
    cursor: str | None
    timezone: str
    chunk_size: int
    null_cursor: str
    options: dict  # the whole interpolated source mapping, for the adapter
    serves_stale_copies: bool = False  # keep a stored row newer than the one read (HTTP default)


@dataclass
class TargetSpec:
    table: str
    key: list[str]
    batch_size: int
    fingerprint: bool = True


@dataclass
class DeleteSpec:
    mode: str = "none"  # none | sweep | mark_and_sweep
    action: str = "soft"  # soft | hard
    max_delete_fraction: float = 0.2
    ids: dict | None = None  # mark_and_sweep: how the id listing differs from the request

    @property
    def sweeps(self) -> bool:
        return self.mode != "none"


@dataclass
class Spec:
    path: str
    crm: str
    entity: str
    enabled: bool
    after: list[str]
    lookback: timedelta
    source: SourceSpec
    target: TargetSpec
    fields: dict[str, FieldSpec]
    rules: list[Rule]
    deletes: DeleteSpec
    digest: str
    description: str = ""
    params: dict = field(default_factory=dict)        # name -> spec.params.ParamSpec (declared)
    param_values: dict = field(default_factory=dict)  # name -> the value in effect for this run

    @property
    def narrowed_by(self) -> list[str]:
        """`NAME=VALUE` of each run parameter whose value narrows the fetch (spec/params.py)."""
        return narrowing(self.params, self.param_values)

    @property
    def name(self) -> str:
        return f"{self.crm}.{self.entity}"

    @property
    def cursor_field(self) -> str | None:
        """The target field holding the source cursor (drives watermarks and stale-row checks)."""
        return field_for_source(self.fields, self.source.cursor) if self.source.cursor else None

    @property
    def key_fields(self) -> list[str]:
        """Target fields mapped from the source key, in source key order."""
        return [field_for_source(self.fields, k) for k in self.source.key]


def field_for_source(fields: Mapping[str, FieldSpec], source_name: str) -> str | None:
    """The target field whose value comes straight from source path `source_name`."""
    for name, f in fields.items():
        if f.expr is None and (f.source_path or name) == source_name:
            return name
    return None


def strings_in(value: Any):
    """Every string inside a spec value (nested mappings and lists), in order."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)
