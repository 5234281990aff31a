"""Progress of a long run: a bar on a terminal, plain log lines in a log file or CI."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total_rows: int, *, initial: int = 0, stream=None, log_every_s: float = 10.0,
                 enabled: bool = True):
        self.stream = stream or sys.stderr
        self.total = total_rows
        self.done = initial
        self.errors = 0
        self.scored_here = 0  # rows scored by this process (a resumed run skips the rest)
        self.start = time.perf_counter()
        self.log_every_s = log_every_s
        self._last_log = self.start
        self._bar = None
        self.enabled = enabled
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self._bar = tqdm(total=total_rows, initial=initial, unit="rows", file=self.stream,
                             desc="scoring", dynamic_ncols=True)

    def update(self, rows: int, errors: int = 0) -> None:
        self.done += rows
        self.scored_here += rows
        self.errors += errors
        if self._bar is not None:
            self._bar.update(rows)
            self._bar.set_postfix(errors=self.errors, refresh=False)
            return
        now = time.perf_counter()
        if self.enabled and (now - self._last_log >= self.log_every_s or self.done == self.total):
            self._last_log = now
            print(f"scored {self.done}/{self.total} rows ({100.0 * self.done / max(self.total, 1):.0f}%), "
                  f"{self.rate():.1f} rows/s, {self.errors} in error", file=self.stream, flush=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def rate(self) -> float:
        return self.scored_here / max(self.elapsed(), 1e-9)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
