"""Order specs so that each runs after the entities it names in `after:` (same CRM)."""
from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

from syncrunner.spec.model import Spec


class OrderError(ValueError):
    pass


def select(specs: list[Spec], only: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> list[Spec]:
    """Filter by entity name (`appointments`) or full name (`genius.appointments`)."""
    def matches(spec: Spec, names: tuple[str, ...]) -> bool:
        return spec.entity in names or spec.name in names

    known = {s.entity for s in specs} | {s.name for s in specs}
    unknown = [n for n in (*only, *exclude) if n not in known]
    if unknown:
        raise OrderError(f"no spec for {', '.join(unknown)} (known: {', '.join(sorted(s.name for s in specs))})")
    chosen = [s for s in specs if (not only or matches(s, only)) and not matches(s, exclude)]
    return chosen


def run_order(specs: list[Spec]) -> list[Spec]:
    """Dependencies first; otherwise the given (path) order. Dependencies outside the selection are
    ignored: they are assumed synced already."""
    by_name = {s.name: s for s in specs}
    graph = TopologicalSorter()
    for s in specs:
        deps = [f"{s.crm}.{d}" for d in s.after if f"{s.crm}.{d}" in by_name]
        graph.add(s.name, *deps)
    position = {s.name: i for i, s in enumerate(specs)}
    try:
        graph.prepare()
    except CycleError as e:
        raise OrderError(f"specs depend on each other in a cycle: {' -> '.join(e.args[1])}") from None
    ordered: list[Spec] = []
    while graph.is_active():
        ready = sorted(graph.get_ready(), key=position.get)
        for name in ready:
            ordered.append(by_name[name])
            graph.done(name)
    return ordered
