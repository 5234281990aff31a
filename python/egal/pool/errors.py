"""Every exception (and the one warning) of egal.pool, and how offending rows are listed in them.

  PoolError       the pool cannot be used at all (schema, ids, files): nothing is scored
  RowError        one row cannot be decoded: its reason is stored, the other rows go on
  PathRefused     an image_path / mask_path value leaves its folder or names no file
  UndecodedRows   (a warning) load_pool_arrays kept rows it could not decode
  DecoderDied     a decoder worker process died (killed, out of memory)
"""
from __future__ import annotations

from ..errors import EgalError, RunFailed

# A refusal lists this many offending rows, then a count of the rest: enough to
# see the pattern, short enough to read in a terminal.
MAX_LISTED_ROWS = 5


class PoolError(EgalError):
    """A pool (Parquet file or directory) cannot be used; the message says why and where."""


class RowError(EgalError):
    """The reason one row cannot be decoded (never a reason to stop the whole pool).

    Its message is the short reason stored in DecodedBatch.errors, e.g. "image: ...", "boxes: ..."."""


class RoiMisfit(RowError):
    """An ROI that does not fit its image: a mask of another aspect ratio, a box outside it (which an ROI drawn
    on the stored pixels of an image shown turned by its EXIF orientation gives)."""


class PathRefused(EgalError):
    """A relative path that leaves its base folder or names no file."""


class DecoderDied(RunFailed):
    """A decoder worker process died (killed, or out of memory) while batches were decoded."""


class UndecodedRows(UserWarning):
    """Warned by load_pool_arrays when rows cannot be decoded; their arrays are zeros and their
    `errors` entry says why. `failures` lists (row, id, reason, {requested column: value})."""

    def __init__(self, path: str, failures):
        self.path = path
        self.failures = list(failures)
        shown = "; ".join(f"row {row} (id {ident!r}): {reason}"
                          for row, ident, reason, _ in self.failures[:MAX_LISTED_ROWS])
        more = len(self.failures) - MAX_LISTED_ROWS
        super().__init__(f"{len(self.failures)} row(s) of pool {path!r} cannot be decoded: {shown}"
                         + (f"; and {more} more" if more > 0 else ""))


class RowCollector:
    """Keeps the first few offending rows of one kind of problem and counts them all.

    Rows are numbered from 0 in the pool's read order (files sorted by relative path).
    """

    def __init__(self):
        self.rows: list = []
        self.count = 0

    def add(self, row: int, ident, detail: str | None = None) -> None:
        self.count += 1
        if len(self.rows) < MAX_LISTED_ROWS:
            self.rows.append((row, ident, detail))

    def __bool__(self) -> bool:
        return self.count > 0

    def describe(self) -> str:
        parts = []
        for row, ident, detail in self.rows:
            text = f"row {row} (id {ident!r})" if ident is not None else f"row {row}"
            parts.append(f"{text}: {detail}" if detail else text)
        text = "; ".join(parts)
        if self.count > len(parts):
            text += f"; and {self.count - len(parts)} more"
        return f"{self.count} row(s): {text}"
