"""Where a cursor-sorted HTTP listing stands (`sorted_by_cursor: true`): enough to resume exactly
from a checkpoint and to get past a per-query result cap (`max_results_per_query`).

A listing alternates between two kinds of query:

    main  the spec's request, sorted by cursor, from `since` (>= it; > it when `exclusive`, i.e. every
          record at that value was read). Restarted at the last cursor value after each page
          (`next_page: from_cursor`) or when the cap is reached, skipping the keys already yielded
          at that value (`keys`: at most the pages that share it before a tie listing takes over).
    tie   (`tie_break`) the records sharing one cursor value, listed by key after `after_key`. Used
          when a whole page shares one value, or at the cap, so any number of records may share one
          value; afterwards the main query goes on past that value (`exclusive`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from syncrunner.core.codec import decode, encode
from syncrunner.core.coerce import coercer
from syncrunner.spec.model import Spec


def _plain(key: Any) -> Any:
    return list(key) if isinstance(key, tuple) else key


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


@dataclass
class CursorState:
    cursor: Any = None                          # the last cursor value yielded
    keys: set = field(default_factory=set)      # keys the main query yielded at exactly `cursor`
    exclusive: bool = False                     # every record at `cursor` was yielded
    tie: bool = False                           # listing the records at `cursor` by key
    after_key: Any = None                       # the last key the tie listing passed

    @classmethod
    def from_position(cls, position: dict | None) -> "CursorState":
        if not position or position.get("cursor") is None:
            return cls()
        return cls(decode(position["cursor"]), {_hashable(k) for k in position.get("keys", [])},
                   bool(position.get("exclusive")), bool(position.get("tie")),
                   _hashable(position.get("after_key")))

    def since(self, window_since: Any) -> tuple[Any, bool]:
        """The main query's lower bound and whether it excludes that value."""
        if self.cursor is not None and (window_since is None or self.cursor >= window_since):
            return self.cursor, self.exclusive
        return window_since, False

    def already_yielded(self, cursor: Any, key: Any) -> bool:
        return cursor is not None and cursor == self.cursor and key in self.keys

    def advance(self, cursor: Any, key: Any) -> None:
        """A record of the main query was yielded."""
        if cursor is None:
            return
        if cursor != self.cursor:
            self.cursor, self.keys, self.exclusive = cursor, set(), False
        self.keys.add(key)

    def start_tie(self) -> None:
        self.tie, self.after_key = True, None

    def end_tie(self) -> None:
        """Every record at `cursor` is read: the main query continues past it."""
        self.tie, self.after_key, self.keys, self.exclusive = False, None, set(), True

    def position(self, order: Callable[[Any], Any] | None = None) -> dict:
        """The checkpoint. In a tie listing, the main query's keys that the listing has passed
        (`order`: how keys compare) are left out: the listing resumes after them anyway."""
        keys = self.keys
        if self.tie and self.after_key is not None and order is not None:
            last = order(self.after_key)
            keys = {k for k in keys if order(k) > last}
        pos: dict[str, Any] = {"cursor": encode(self.cursor), "keys": sorted((_plain(k) for k in keys), key=str)}
        if self.exclusive:
            pos["exclusive"] = True
        if self.tie:
            pos.update(tie=True, after_key=_plain(self.after_key))
        return pos


def key_order(spec: Spec) -> Callable[[Any], Any]:
    """A source key typed like the target field(s) it lands in, so keys compare in the API's order
    (HubSpot ids are numeric strings: "999" < "1000" only as numbers)."""
    typers = []
    for name in spec.key_fields:
        f = spec.fields.get(name) if name else None
        typers.append(coercer(f.type, tz=spec.source.timezone, precision=f.precision, scale=f.scale)
                      if f is not None else (lambda v: v))
    if len(typers) == 1:
        return typers[0]
    return lambda key: tuple(t(v) for t, v in zip(typers, key))
