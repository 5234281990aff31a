"""Decoding in worker processes (egal.pool.workers.decode_in_order), the one way egal decodes in parallel:
its workers never outlive the process that started them, and a dead worker is an error, never a hang."""
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from pools import make_rows, write_pool
from process_tags import processes_tagged, wait_until_gone

psutil = pytest.importorskip("psutil")

# Decodes a pool with worker processes, then blocks while the workers wait for more: the state in
# which a killed parent can leave them behind (spawned workers hold both ends of their task pipe,
# so they never see it close).
SCRIPT = textwrap.dedent("""
    import sys, time
    from egal.pool import DecodeSettings, open_pool
    from egal.pool.workers import decode_in_order

    spec = open_pool(sys.argv[1])

    def batches_then_wait():
        yield from spec.iter_batches(4)
        print("decoded", flush=True)
        while True:
            time.sleep(1)

    for decoded in decode_in_order(batches_then_wait(), DecodeSettings((32, 32)), workers=2):
        pass
""")

# load_pool_arrays with two workers and settings whose unpickling, in the worker, ends that worker:
# a worker dying mid-task. A multiprocessing.Pool would wait for the lost task forever.
DEAD_WORKER = textwrap.dedent("""
    import os, sys
    from egal.pool import DecodeSettings, DecoderDied, load_pool_arrays

    class DiesInTheWorker(DecodeSettings):
        def __reduce__(self):
            return (os._exit, (3,))

    try:
        load_pool_arrays(sys.argv[1], DiesInTheWorker((32, 32)), workers=2)
    except DecoderDied as exc:
        print("DecoderDied:", exc, flush=True)
        sys.exit(0)
    sys.exit("loaded without noticing the dead worker")
""")


def test_decoder_workers_die_with_a_killed_parent(tmp_path):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(6, folder=tmp_path, size=32))
    tag = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(pool)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "EGAL_TEST_PROCESS_TAG": tag})
    try:
        assert proc.stdout.readline().strip() == "decoded", proc.stderr.read() if proc.poll() is not None else ""
        workers = [p for p in processes_tagged(tag) if p.pid != proc.pid]
        assert len(workers) >= 3, "expected the two decoder workers and the resource tracker"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        left = wait_until_gone(tag)
        assert not left, [" ".join(p.cmdline())[:100] for p in left]
    finally:
        for process in processes_tagged(tag):
            process.kill()
        proc.kill()
        proc.communicate(timeout=30)


def test_load_pool_arrays_turns_a_dead_worker_into_an_error(tmp_path):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(12, folder=tmp_path, size=32))
    tag = uuid.uuid4().hex
    try:
        done = subprocess.run([sys.executable, "-c", DEAD_WORKER, str(pool)], capture_output=True, text=True,
                              timeout=120, env={**os.environ, "EGAL_TEST_PROCESS_TAG": tag})
    except subprocess.TimeoutExpired:
        for process in processes_tagged(tag):
            process.kill()
        pytest.fail("load_pool_arrays hung after a decoder worker died")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "a decoder worker process died" in done.stdout and str(pool) in done.stdout and "workers=0" in done.stdout
    assert not wait_until_gone(tag), "the other worker outlived the failed load"


def test_a_worker_killed_between_batches_stops_the_decoding(tmp_path):
    from egal.pool import DecoderDied, DecodeSettings, open_pool
    from egal.pool.workers import decode_in_order

    spec = open_pool(write_pool(tmp_path / "pool.parquet", make_rows(12, folder=tmp_path, size=32)))
    decoded = decode_in_order(spec.iter_batches(2), DecodeSettings((32, 32)), workers=1)
    try:
        assert len(next(decoded)) == 2
        (worker,) = decoder_workers()
        worker.kill()
        worker.wait(timeout=30)
        with pytest.raises(DecoderDied, match="a decoder worker process died"):
            list(decoded)
    finally:
        decoded.close()
    assert not decoder_workers()  # the executor is shut down: its worker is gone


def decoder_workers():
    """This process's spawned workers (not multiprocessing's resource tracker)."""
    return [c for c in psutil.Process().children() if "spawn_main" in " ".join(c.cmdline())]


def test_an_exception_in_a_worker_is_raised_here_with_the_workers_traceback():
    from egal.pool import DecodeSettings, RawBatch
    from egal.pool.workers import decode_in_order

    # Row numbers that are not a list: decode_batch fails outside its per-row error handling (a TypeError).
    broken = RawBatch(index=0, start_row=0, ids=["a"], images=[b"x"], image_is_path=False, rois=[None],
                      roi_kind=None, base_dirs=["/nonexistent"], rows=7)
    decoded = decode_in_order(iter([broken]), DecodeSettings((8, 8)), workers=1)
    try:
        with pytest.raises(TypeError, match="not iterable") as caught:
            next(decoded)
    finally:
        decoded.close()
    assert "in the decoder worker process" in str(caught.value.__cause__)
    assert "decode_batch" in str(caught.value.__cause__)  # the worker's traceback
    assert not decoder_workers()


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/wchan"), reason="needs Linux's /proc/PID/wchan")
def test_a_worker_killed_in_the_middle_of_sending_a_batch_is_an_error_not_a_hang(tmp_path):
    # The case that hangs a ProcessPoolExecutor: a worker dies after sending part of a result. Here the
    # consumer pauses, so the worker blocks halfway through sending its next 3 MB batch; then it is killed.
    from egal.pool import DecoderDied, DecodeSettings, open_pool
    from egal.pool.workers import decode_in_order

    spec = open_pool(write_pool(tmp_path / "pool.parquet", make_rows(8, folder=tmp_path, size=32)))
    decoded = decode_in_order(spec.iter_batches(4), DecodeSettings((256, 256), 3), workers=1)
    try:
        next(decoded)
        (worker,) = decoder_workers()
        deadline = time.time() + 60
        while "pipe_write" not in open(f"/proc/{worker.pid}/wchan").read() and time.time() < deadline:
            time.sleep(0.02)
        assert "pipe_write" in open(f"/proc/{worker.pid}/wchan").read(), "the worker should be sending"
        worker.kill()
        while worker.status() != psutil.STATUS_ZOMBIE and time.time() < deadline:  # dead, not reaped by us
            time.sleep(0.02)
        started = time.time()
        with pytest.raises(DecoderDied, match=r"a decoder worker process died \(killed, or out of memory; exit code "
                           r"-9\)"):
            next(decoded)
        assert time.time() - started < 10
    finally:
        decoded.close()
    assert not decoder_workers()


def test_a_batch_that_cannot_reach_a_worker_is_an_error_not_a_hang(tmp_path):
    # The task thread cannot pickle the third batch: before, it died and decode_in_order waited forever.
    from egal.pool import DecodeSettings, open_pool
    from egal.pool.workers import decode_in_order

    spec = open_pool(write_pool(tmp_path / "pool.parquet", make_rows(12, folder=tmp_path, size=32)))

    def batches():
        for raw in spec.iter_batches(2):
            if raw.index == 2:
                raw.extra["unpicklable"] = [lambda: 0] * len(raw)
            yield raw

    decoded = decode_in_order(batches(), DecodeSettings((32, 32)), workers=2)
    started = time.time()
    try:
        assert [len(next(decoded)) for _ in range(2)] == [2, 2]
        with pytest.raises(RuntimeError, match=r"a batch could not be handed to a decoder worker process "
                                               r"\((AttributeError|PicklingError): .*"):
            next(decoded)
    finally:
        decoded.close()
    assert time.time() - started < 30
    assert not decoder_workers()
