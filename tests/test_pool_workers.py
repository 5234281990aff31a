"""Decoder worker processes never outlive the process that started them (egal.pool.workers)."""
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from pools import make_rows, write_pool

psutil = pytest.importorskip("psutil")

# Decodes a pool with worker processes (egal.pool.load's pool, through a forkserver or spawned), then
# blocks while the workers wait for more: the state in which a killed parent can leave them behind
# (spawned workers hold both ends of their task pipe, so they never see it close).
SCRIPT = textwrap.dedent("""
    import multiprocessing, sys, time
    from egal.pool import DecodeSettings, open_pool
    from egal.pool.load import _decode_all

    if sys.argv[2] == "spawn":  # as on a platform without forkserver
        multiprocessing.get_all_start_methods = lambda: ["spawn"]

    spec = open_pool(sys.argv[1])

    def batches_then_wait():
        yield from spec.iter_batches(4)
        print("decoded", flush=True)
        while True:
            time.sleep(1)

    for decoded in _decode_all(batches_then_wait(), DecodeSettings((32, 32)), workers=2):
        pass
""")


def tagged(tag):
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("EGAL_TEST_PROCESS_TAG") == tag and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_load_pool_workers_die_with_a_killed_parent(tmp_path, method):
    # A guard: multiprocessing.Pool's workers (load_pool_arrays) already end with their parent;
    # egal score's ProcessPoolExecutor workers did not (tests/test_score_resume.py).
    pool = write_pool(tmp_path / "pool.parquet", make_rows(6, folder=tmp_path, size=32))
    tag = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(pool), method], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "EGAL_TEST_PROCESS_TAG": tag})
    try:
        assert proc.stdout.readline().strip() == "decoded", proc.stderr.read() if proc.poll() is not None else ""
        workers = [p for p in tagged(tag) if p.pid != proc.pid]
        assert len(workers) >= 3, "expected the decoder workers and the resource tracker (and the forkserver)"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.time() + 15
        while (left := tagged(tag)) and time.time() < deadline:
            time.sleep(0.2)
        assert not left, [" ".join(p.cmdline())[:100] for p in left]
    finally:
        for process in tagged(tag):
            process.kill()
        proc.kill()
        proc.communicate(timeout=30)
