"""Source kinds by name. Each adapter is imported only when a spec uses it (an HTTP run never
loads a database driver, a SQL run never loads requests)."""
from __future__ import annotations

from importlib import import_module

from syncrunner.sources.base import Source
from syncrunner.spec.model import Spec

KINDS = {
    "sql": ("syncrunner.sources.sql", "SqlSource"),
    "http": ("syncrunner.sources.http.source", "HttpSource"),
    "file": ("syncrunner.sources.file", "FileSource"),
}


def make_source(spec: Spec) -> Source:
    try:
        module, name = KINDS[spec.source.kind]
    except KeyError:
        raise ValueError(f"unknown source kind {spec.source.kind!r}") from None
    return getattr(import_module(module), name)(spec)
