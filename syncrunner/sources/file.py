"""File source: CSV or JSON Lines from a path or glob, streamed row by row (memory stays flat).

Files are read in name order. When the spec has a cursor, the window is applied client-side on it
(a file cannot be queried). A row that cannot be parsed (a CSV row with more or fewer cells than
columns, a line that is not a JSON object) becomes a BadRecord: one dead letter, not a failed run.
The checkpoint is (file, row) so a resumed run skips what the failed one committed."""
from __future__ import annotations

import csv
import glob
import json
import logging
from pathlib import Path
from typing import Iterator

from syncrunner.core.records import BadRecord, Chunk
from syncrunner.core.window import Window
from syncrunner.sources.base import SourceMetrics
from syncrunner.sources.streaming import CursorReader, chunked, in_window
from syncrunner.spec.model import Spec

log = logging.getLogger("syncrunner.file")


class FileSourceError(Exception):
    """The files cannot be read at all (none match, unreadable, wrong encoding)."""


class FileSource:
    def __init__(self, spec: Spec):
        self.spec = spec
        o = spec.source.options
        self.pattern = str(o["path"])
        self.format = o["format"]
        self.encoding = o.get("encoding", "utf-8")
        self.delimiter = o.get("delimiter", ",")
        self.quotechar = o.get("quotechar", '"')
        self.header = bool(o.get("header", True))
        self.columns = list(o["columns"]) if o.get("columns") else None
        self.cursor = CursorReader.for_spec(spec)
        self.metrics = SourceMetrics()
        self._file_no = 0
        self._row = 0

    def files(self) -> list[str]:
        found = sorted(glob.glob(self.pattern, recursive=True))
        if not found and Path(self.pattern).is_file():
            found = [self.pattern]
        if not found:
            raise FileSourceError(f"{self.spec.name}: no file matches {self.pattern!r}")
        return found

    # -- reading ---------------------------------------------------------------------------------
    def _rows(self, path: str) -> Iterator[dict]:
        try:
            with open(path, newline="" if self.format == "csv" else None, encoding=self.encoding) as fh:
                yield from (self._csv(fh, path) if self.format == "csv" else self._jsonl(fh, path))
        except UnicodeDecodeError as e:
            raise FileSourceError(f"{self.spec.name}: {path} is not {self.encoding} text "
                                  f"(near byte {e.start}); set source.encoding") from None

    def _csv(self, fh, path: str) -> Iterator[dict]:
        reader = csv.reader(fh, delimiter=self.delimiter, quotechar=self.quotechar)
        columns = self.columns
        if self.header:
            head = next(reader, None)
            columns = columns or head
        if not columns:
            return
        for cells in reader:
            if not cells:
                continue  # blank line
            line = reader.line_num
            if len(cells) != len(columns):
                raw = {"_file": path, "_line": line, "_cells": cells}
                yield BadRecord(raw, f"{Path(path).name} line {line}: {len(cells)} cells, "
                                     f"expected {len(columns)}")
            else:
                yield dict(zip(columns, cells))

    def _jsonl(self, fh, path: str) -> Iterator[dict]:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                rec, reason = None, f"not JSON ({e})"
            else:
                reason = "not a JSON object"
            if isinstance(rec, dict):
                yield rec
            else:
                yield BadRecord({"_file": path, "_line": line_no, "_text": line.rstrip("\n")[:2000]},
                                f"{Path(path).name} line {line_no}: {reason}")

    def _stream(self, files: list[str], window: Window, position: dict | None) -> Iterator[dict]:
        start_file, skip_rows = 0, 0
        if position and position.get("file") in files:
            start_file, skip_rows = files.index(position["file"]), int(position["row"])
        null_cursor = self.spec.source.null_cursor
        for i in range(start_file, len(files)):
            self._file_no, self._row = i, 0
            for rec in self._rows(files[i]):
                self._row += 1
                if self._row <= skip_rows:
                    continue
                if self.cursor.enabled and not isinstance(rec, BadRecord):
                    c = self.cursor(rec)
                    if c is None:
                        self.metrics.null_cursor_rows += 1
                    if not in_window(c, window, null_cursor):
                        continue
                yield rec
            skip_rows = 0

    def chunks(self, window: Window, position: dict | None, limit: int = 0) -> Iterator[Chunk]:
        files = self.files()
        self.metrics.extra["files"] = len(files)

        def where() -> dict:
            return {"file": files[self._file_no], "row": self._row}

        yield from chunked(self._stream(files, window, position), where, self.spec.source.chunk_size, limit)

    def count(self, window: Window) -> int | None:
        return None

    def describe(self, window: Window) -> dict:
        files = self.files()
        return {"files": files[:20], "file_count": len(files), "format": self.format,
                "window": "applied client-side on " + self.spec.source.cursor if self.cursor.enabled else None}

    def close(self) -> None:
        pass
