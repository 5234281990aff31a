"""Decoding batches in worker processes: egal's one way to decode in parallel.

`decode_in_order` is what both `egal score` (egal.pipeline.local_engine) and
`load_pool_arrays` decode with: a spawned ProcessPoolExecutor (forking a process
that may hold PyTorch's or OpenMP's threads is unsafe), a bounded window of
2 * workers batches in flight (memory does not grow with the pool), results in
order. A worker that dies (killed, out of memory) breaks the executor, which
`decode_in_order` turns into DecoderDied at once; a multiprocessing.Pool would
instead wait forever for the lost task.

The workers never outlive the process that started them. A worker blocked on its
task queue would otherwise wait forever once its parent is gone (killed with
SIGKILL, say): the queue's pipe stays open in the worker itself, so it never sees
end-of-file, and it keeps the caller's stdout and stderr open. `watch_parent` is
the initializer of every decoder worker:

  * on Linux, the kernel sends the worker SIGKILL the moment its parent dies
    (prctl PR_SET_PDEATHSIG), checked against a parent that died before the call;
  * everywhere, a daemon thread also checks every WATCH_INTERVAL_S seconds that the
    parent is still the one it started with, and ends the worker when it is not;
  * SIGINT is ignored: Ctrl-C in a terminal reaches the whole process group, and it
    is the parent that stops the run (shutting its workers down in order).
"""
from __future__ import annotations

import collections
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Iterable, Iterator

from .batches import RawBatch
from .decode import DecodedBatch, DecodeSettings, decode_batch
from .errors import DecoderDied

WATCH_INTERVAL_S = 0.5
_PR_SET_PDEATHSIG = 1


def decode_in_order(raw_batches: Iterable[RawBatch], settings: DecodeSettings, workers: int) -> Iterator[DecodedBatch]:
    """decode_batch of every RawBatch, in order: in this process (workers=0) or in `workers` spawned
    worker processes, at most 2 * workers batches ahead of the consumer.

    A dead worker raises DecoderDied (the caller may add what is kept and how to go on). Closing the
    generator (or an exception, Ctrl-C, SIGTERM in the consumer) drops the batches not yet started
    and shuts the workers down before it returns.
    """
    if workers <= 0:
        for raw in raw_batches:
            yield decode_batch(raw, settings)
        return
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=watch_parent, initargs=(os.getpid(),))
    window = 2 * workers
    try:
        in_flight: collections.deque = collections.deque()
        for raw in raw_batches:
            in_flight.append(executor.submit(decode_batch, raw, settings))
            if len(in_flight) >= window:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
    except BrokenProcessPool as exc:
        raise DecoderDied("a decoder worker process died (killed, or out of memory)") from exc
    finally:
        # Batches not yet started are dropped, not decoded: an interrupted run stops at once.
        executor.shutdown(wait=True, cancel_futures=True)


def watch_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker when its parent, the process `parent_pid` that started it, is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the thread below still does the job
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="egal-parent-watch", daemon=True).start()


def _watch(parent_pid: int) -> None:
    while True:
        time.sleep(WATCH_INTERVAL_S)
        if os.getppid() != parent_pid:
            os._exit(1)
