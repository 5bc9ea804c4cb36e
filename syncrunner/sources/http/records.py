"""Where a page's records are and how they are laid out (`source.records`, `source.records_by_key`).

Most APIs answer a list of objects at a path. Some answer an object keyed by id instead
(`{"data": {"13688": {...}, "13687": {...}}}`, SalesRabbit lead status histories), whose values are
records or lists of records; jmespath can take the values but drops the keys, which are often the
only link to the parent (the lead id). `records_by_key` turns such an object into the record list,
optionally copying each key into a field. An empty object may arrive as `[]` (PHP encodes an empty
associative array so) and is read as no records."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jmespath


class RecordsError(ValueError):
    """The response does not hold records where and as the spec says; the message says what it holds."""


@dataclass
class RecordsAt:
    expr: str
    search: Callable[[Any], Any]
    by_key: bool = False
    key_field: str | None = None
    lists: bool = False             # each keyed value is a list of records

    @classmethod
    def from_options(cls, o: dict) -> "RecordsAt":
        expr = str(o["records"])
        keyed = o.get("records_by_key")
        if not keyed:
            return cls(expr, jmespath.compile(expr).search)
        return cls(expr, jmespath.compile(expr).search, True, keyed.get("key_field"), keyed.get("values") == "lists")

    def read(self, body: Any) -> list[dict]:
        found = self.search(body)
        if found is None:
            keys = sorted(body) if isinstance(body, dict) else type(body).__name__
            raise RecordsError(f"no records at '{self.expr}' in the response (top-level keys: {keys})")
        records = self._unkeyed(found) if self.by_key else found
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise RecordsError(f"'{self.expr}' is not a list of objects"
                               + (" (records_by_key: an object of objects or of lists of objects)" if self.by_key else ""))
        return records

    def _unkeyed(self, found: Any) -> Any:
        if found == []:
            return []
        if not isinstance(found, dict):
            return None
        out: list[Any] = []
        for key, value in found.items():
            for rec in (value if self.lists and isinstance(value, list) else [value]):
                out.append({**rec, self.key_field: key} if self.key_field and isinstance(rec, dict) else rec)
        return out
