"""Rows scored so far, for `egal score`: the shared Progress plus rows/s and a line every few seconds off a terminal."""
from __future__ import annotations

import time

from ..progress import Progress


class RowProgress(Progress):
    def __init__(self, total_rows: int, *, initial: int = 0, enabled: bool = True, stream=None,
                 log_every_s: float = 10.0):
        super().__init__(total_rows, enabled=enabled, stream=stream, desc="scoring", unit="rows", initial=initial)
        self.total = total_rows
        self.done = initial
        self.errors = 0
        self.scored_here = 0  # rows scored by this process (a resumed run skips the rest)
        self.start = self._last_log = time.perf_counter()
        self.log_every_s = log_every_s

    def update(self, rows: int, errors: int = 0) -> None:
        self.done += rows
        self.scored_here += rows
        self.errors += errors
        if self.bar is not None:
            self.advance(rows, f"errors={self.errors}")
            return
        now = time.perf_counter()
        if now - self._last_log >= self.log_every_s or self.done == self.total:
            self._last_log = now
            self.log(f"scored {self.done}/{self.total} rows ({100.0 * self.done / max(self.total, 1):.0f}%), "
                     f"{self.rate():.1f} rows/s, {self.errors} in error")

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def rate(self) -> float:
        return self.scored_here / max(self.elapsed(), 1e-9)
