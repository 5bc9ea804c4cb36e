"""YAML loading that remembers the line of every key, so spec errors can say file:line: key."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple  # a path into the document: keys and list indexes


@dataclass
class Located:
    """A parsed YAML document plus the 1-based line of each path's key and value."""

    data: Any
    key_lines: dict[tuple, int] = field(default_factory=dict)
    value_lines: dict[tuple, int] = field(default_factory=dict)

    def line_of(self, path: tuple, prefer_key: bool = True) -> int:
        """Line of the nearest known ancestor of path (the key line when there is one)."""
        p = tuple(path)
        while True:
            if prefer_key and p in self.key_lines:
                return self.key_lines[p]
            if p in self.value_lines:
                return self.value_lines[p]
            if not p:
                return 1
            p = p[:-1]


# libyaml's parser when PyYAML was built with it: the same nodes and marks for a valid document,
# ~9x faster (a Genius spec: 10.7 -> 1.2 ms; a folder run or `lint specs/` parses every spec).
# A document it rejects is parsed again by the pure-Python parser, whose messages say more
# ("found character '\t' that cannot start any token", "found undefined alias 'nope'").
_FAST_LOADER = getattr(yaml, "CSafeLoader", None)


def load_located(text: str) -> Located:
    """Parse YAML text (safe loader) and index line numbers by path. Raises yaml.YAMLError."""
    if _FAST_LOADER is not None:
        try:
            return _load(text, _FAST_LOADER)
        except yaml.YAMLError:
            pass
    return _load(text, yaml.SafeLoader)


def _load(text: str, loader_class: type) -> Located:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    loc = Located(data=data)
    if node is not None:
        _index(node, (), loc)
    return loc


def _index(node: yaml.Node, path: tuple, loc: Located) -> None:
    loc.value_lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            loc.key_lines[path + (key,)] = key_node.start_mark.line + 1
            _index(value_node, path + (key,), loc)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, path + (i,), loc)
