"""Scoring a pool on this machine: decode in worker processes while the model runs.

The main process reads the pool in fixed batches, hands each batch's raw bytes
to a pool of decoder processes (a bounded window of batches in flight, so
memory does not grow with the pool), and runs the model and the fused scorer on
the decoded batches in order, writing one shard per batch.
"""
from __future__ import annotations

import collections
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..pool import DecodeSettings, decode_batch
from ..pool.workers import watch_parent
from .batch_scoring import score_decoded_batch


def score_pool_locally(spec, runner, store, *, alpha: float, batch_size: int, workers: int, progress) -> None:
    """Score every batch of `spec` that has no shard in `store` yet."""
    settings = DecodeSettings(input_size=runner.input_size, in_channels=runner.in_channels)
    done = store.completed_batches()
    first = min(set(range(spec.num_batches(batch_size))) - done, default=None)
    if first is None:
        return
    pending = (raw for raw in spec.iter_batches(batch_size, start_batch=first) if raw.index not in done)
    decoded_batches = _decoded_in_order(pending, settings, workers)
    try:
        for decoded in decoded_batches:
            table = score_decoded_batch(decoded, runner, alpha=alpha)
            store.write_shard(decoded.index, table)
            progress.update(table.num_rows, errors=table.num_rows - table.column("status").to_pylist().count("ok"))
    finally:
        decoded_batches.close()  # stops the decoder workers now, also when scoring stopped on an error or a signal


class DecoderDied(RuntimeError):
    user_facing = True  # the CLI prints the message, without a traceback


def _decoded_in_order(raw_batches, settings, workers: int):
    if workers <= 0:
        for raw in raw_batches:
            yield decode_batch(raw, settings)
        return
    # spawn: the parent holds PyTorch's and OpenMP's threads, which fork would copy mid-flight.
    # watch_parent: the workers die with this process, even when it is killed (egal.pool.workers).
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=watch_parent, initargs=(os.getpid(),))
    window = 2 * workers
    try:
        in_flight = collections.deque()
        for raw in raw_batches:
            in_flight.append(executor.submit(decode_batch, raw, settings))
            if len(in_flight) >= window:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
    except BrokenProcessPool as exc:
        raise DecoderDied(
            "a decoder worker process died (killed, or out of memory); every batch scored so far is kept: "
            "rerun with --resume (with --workers 0 to decode in the main process)") from exc
    finally:
        # Batches not yet started are dropped, not decoded: an interrupted run stops at once.
        executor.shutdown(wait=True, cancel_futures=True)
