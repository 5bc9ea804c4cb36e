"""`source.for_each`: the spec's request sent once per parent (a child listing such as a task's
status history), or once per item of a literal list (two queries for one entity).

Levels are nested loops, outermost first: a level lists its parents once for each parent of the
levels before it (its templates see those as `parent.NAME`), and the main request runs once per
innermost parent, seeing the fields of every level as `parent.NAME`. Each record gets them under
its key `parent`, so a spec maps `from: parent.task_id`.

Position: parents come in the order the API lists them, which may change between runs (a task
rescheduled), so the checkpoint names the current parent by its index *and* its fields. A resumed
run lists the parents again and starts at that index when the same parent is still there (its
records already written are read again: an upsert, counted unchanged); otherwise it starts from
the first parent. Nothing is lost either way."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import jmespath

from syncrunner.core.requests import RequestTemplate
from syncrunner.sources.http.paging import Paginator, paginator
from syncrunner.sources.http.records import RecordsAt

log = logging.getLogger("syncrunner.http")


@dataclass
class Level:
    """One `for_each` level: a literal list, or a request whose records are the parents."""

    items: list[dict] | None
    request: RequestTemplate | None
    records: RecordsAt | None
    paginator: Paginator | None
    fields: dict[str, Callable[[Any], Any]] | None

    @classmethod
    def from_options(cls, o: dict, base_url: str, name: str, i: int) -> "Level":
        if "items" in o:
            return cls([dict(x) for x in o["items"]], None, None, None, None)
        req = RequestTemplate({"method": "GET", **o["request"]}, name, f"for_each[{i}].request")
        fields = {k: jmespath.compile(v).search for k, v in o["fields"].items()} if o.get("fields") else None
        return cls(None, req, RecordsAt.from_options({"records": o["records"]}),
                   paginator(o.get("pagination"), base_url, req.body is not None), fields)

    def expose(self, record: dict) -> dict:
        return {k: get(record) for k, get in self.fields.items()} if self.fields else dict(record)


class ForEach:
    """The parents of a source, and where a run stands among them."""

    def __init__(self, options: list[dict], base_url: str, name: str):
        self.levels = [Level.from_options(o, base_url, name, i) for i, o in enumerate(options)]
        self.name = name
        self.index = 0                   # the current parent's number in this run's listing
        self.current: dict | None = None

    def parents(self, fetch: Callable, context: Callable[[dict | None], dict]) -> Iterator[dict]:
        """Every innermost parent with the fields of its outer ones. `fetch(template, paginator,
        records, ctx)` yields a request's records across its pages."""
        def walk(depth: int, outer: dict) -> Iterator[dict]:
            if depth == len(self.levels):
                yield outer
                return
            lv = self.levels[depth]
            found = lv.items if lv.items is not None else fetch(
                lv.request, lv.paginator, lv.records, context(outer or None))
            for rec in found:
                yield from walk(depth + 1, {**outer, **lv.expose(rec)})
        return walk(0, {})

    def resumed(self, fetch: Callable, context: Callable[[dict | None], dict],
                position: dict | None) -> Iterator[tuple[int, dict]]:
        """(index, parent) from the checkpoint's parent when it is still at its place, else all."""
        at = (position or {}).get("parent_index")
        if at is not None:
            listing = enumerate(self.parents(fetch, context))
            for i, parent in listing:
                if i < at:
                    continue
                if parent == position.get("parent"):
                    log.info("%s: resuming at parent %d (%s)", self.name, i + 1, _short(parent))
                    yield i, parent
                    yield from listing
                    return
                break
            log.info("%s: the parent the checkpoint names is no longer at its place: starting from the "
                     "first parent (records read again are upserts)", self.name)
        yield from enumerate(self.parents(fetch, context))

    def position(self) -> dict:
        return {"parent_index": self.index, "parent": self.current}


def _short(parent: dict) -> str:
    text = ", ".join(f"{k}={v}" for k, v in parent.items())
    return text if len(text) <= 120 else text[:117] + "..."
