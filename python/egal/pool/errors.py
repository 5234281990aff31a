"""The one exception a pool refuses with, and how offending rows are listed in it."""
from __future__ import annotations

# A refusal lists this many offending rows, then a count of the rest: enough to
# see the pattern, short enough to read in a terminal.
MAX_LISTED_ROWS = 5


class PoolError(ValueError):
    """A pool (Parquet file or directory) cannot be used; the message says why and where."""


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
