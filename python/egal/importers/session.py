"""One import run: the streaming writer, the skip ledger, the counts and the progress, together.

Every importer does the same around its own reading: refuse a repeated id, count rows per label
and rows with an ROI, advance the progress bar, write the pool atomically, and return an
ImportResult. That is written here once.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from ..progress import Progress
from .errors import SourceError
from .ledger import SkipLedger
from .writer import StreamingPoolWriter

LOG_EVERY_S = 10.0


@dataclass
class ImportResult:
    """What an import wrote and what it left out.

    out:            the pool written
    rows:           rows in it
    labels:         rows per label, None for unlabeled rows
    rows_with_roi:  rows with a non-empty ROI (the rest score by entropy alone)
    skipped:        the SkipLedger: what was left out, per reason, with examples
    seconds:        how long the import took
    """

    source: str
    out: Path
    rows: int
    labels: dict[str | None, int]
    rows_with_roi: int
    skipped: SkipLedger = field(repr=False)
    seconds: float

    def summary(self) -> str:
        classes = ", ".join(f"{'unlabeled' if k is None else k} {v}" for k, v in
                            sorted(self.labels.items(), key=lambda kv: (kv[0] is None, str(kv[0]))))
        lines = [f"Wrote {self.out}: {self.rows} rows from {self.source} in {self.seconds:.1f} s "
                 f"({classes}; {self.rows_with_roi} with an ROI)"]
        if not self.skipped.skipped:
            lines.append("Nothing was skipped.")
        return "\n".join(lines + self.skipped.lines())

    def to_dict(self) -> dict:
        return {"source": self.source, "out": str(self.out), "rows": self.rows,
                "labels": {("" if k is None else k): v for k, v in self.labels.items()},
                "rows_with_roi": self.rows_with_roi, "seconds": round(self.seconds, 3), **self.skipped.to_dict()}


class ImportSession:
    """with ImportSession(...) as s: s.add(row, has_roi) / s.ledger.skip(...); then s.result."""

    def __init__(self, source: str, out, schema: pa.Schema, *, overwrite: bool, files_folder: bool = False,
                 progress: bool = True, total: int = 0, unit: str = "images", inputs: dict | None = None):
        """inputs: {argument: path} of the files the import reads, which `out` must never be."""
        self.source = source
        self.ledger = SkipLedger()
        self.writer = StreamingPoolWriter(out, schema, overwrite=overwrite, files_folder=files_folder, inputs=inputs)
        self.labels: Counter = Counter()
        self.rows_with_roi = 0
        self._ids: set = set()
        self._started = time.monotonic()
        self._progress = Progress(total, enabled=progress, desc=f"importing {source}", unit=unit)
        self._total, self._unit, self._done, self._logged = total, unit, 0, self._started
        self.result: ImportResult | None = None

    def __enter__(self) -> ImportSession:
        self.writer.__enter__()
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self._progress.close()
        if kind is not None:
            self.writer.abort(exc)
            return
        if self.writer.rows_added == 0:
            self.writer.abort()
            reasons = "\n".join(self.ledger.lines()) or "(the source holds no image)"
            raise SourceError(f"no row of {self.source} could be imported, so no pool was written:\n{reasons}")
        out = self.writer.commit()
        self.result = ImportResult(self.source, out, self.writer.rows, dict(self.labels), self.rows_with_roi,
                                   self.ledger, time.monotonic() - self._started)

    def add(self, row: dict, *, has_roi: bool, where: str = "", notes=()) -> bool:
        """Writes the row unless its id was used already or a text of it is not UTF-8 (then skipped, and False).
        notes: what is worth knowing about the row (kept without ROI...), counted only once it is written."""
        where = where or row["id"]
        if any(isinstance(v, str) and not _is_utf8(v) for v in row.values()):
            # a file or folder name in another encoding: Parquet holds UTF-8 text only
            self.ledger.skip("a file or folder name that is not UTF-8 text (rename it)",
                             where.encode("utf-8", "backslashreplace").decode("utf-8"))
            return False
        if row["id"] in self._ids:
            self.ledger.skip("id used twice (the first row kept)", where)
            return False
        self._ids.add(row["id"])
        self.writer.add(row)
        for note in notes:
            self.ledger.note(note, where)
        self.labels[row.get("label")] += 1
        self.rows_with_roi += bool(has_roi)
        return True

    def write_file(self, relative: str, data: bytes) -> str:
        return self.writer.write_file(relative, data)

    def reference(self, path) -> str:
        return self.writer.reference(path)

    def advance(self, n: int = 1) -> None:
        self._progress.advance(n)
        self._done += n
        now = time.monotonic()
        # Without a terminal (a log file, a scheduler) the bar is off: a line every LOG_EVERY_S instead.
        if self._progress.bar is None and now - self._logged >= LOG_EVERY_S:
            self._logged = now
            self._progress.log(f"{self._done} of {self._total} {self._unit} read, {self.writer.rows_added} rows, "
                               f"{self.ledger.total_skipped} skipped")

    def log(self, message: str) -> None:
        self._progress.log(message)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
