"""What the CPU benchmark scripts share: running their own pytest-benchmark cases in a child process with CPU time
as the timer (on a machine shared with other work, wall time measures that work too), and naming the CPU their
figures come from."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def run_own_benchmarks(script: str, *, env: dict | None = None) -> dict:
    """pytest-benchmark's JSON for the benchmarks of `script` (a bench/*.py file's __file__), run once."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "benchmarks.json"
        subprocess.run([sys.executable, "-m", "pytest", script, "--benchmark-only", "-q", "-p", "no:cacheprovider",
                        "--benchmark-timer=time.process_time", f"--benchmark-json={out}"], check=True, env=env)
        return json.loads(out.read_text())


def cpu_model() -> str:
    """The CPU's model name as lscpu gives it ('?' where it gives none)."""
    listing = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in listing.splitlines() if line.startswith("Model name")), "?")
