"""Progress of long work: a tqdm bar on a terminal, timestamped log lines otherwise (logs, CI).

Imports nothing heavy, so the scoring job on an inference-only node can use it.
"""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, *, enabled: bool = True, stream=None, desc: str = "rounds", unit: str = "it",
                 initial: int = 0):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.bar = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream,
                                dynamic_ncols=True)
            except ImportError:  # tqdm is optional here; log lines do the job
                self.bar = None

    def log(self, message: str) -> None:
        if not self.enabled:
            return
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def advance(self, n: int = 1, status: str = "") -> None:
        if self.bar is not None:
            self.bar.update(n)
            if status:
                self.bar.set_postfix_str(status)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
