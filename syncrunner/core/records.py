"""What flows from a source to the runtime: a chunk of records with its resume position, and a
record the source could read but not parse."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Chunk:
    records: list[dict]
    position: dict            # JSON-safe: where the next chunk starts (stored in the checkpoint)


class BadRecord(dict):
    """A record the source could read but not parse (a CSV row with too many columns, a JSON Lines
    line that is not JSON). The engine sends it to the dead-letter table with `reason` instead of
    mapping it, so one bad line costs one record, not the run."""

    def __init__(self, raw: dict, reason: str):
        super().__init__(raw)
        self.reason = reason
