"""Scoring a pool on this machine: decode in worker processes while the model runs.

The main process reads the pool in fixed batches, hands each batch's raw bytes
to decoder processes (egal.pool.workers.decode_in_order: a bounded window of
batches in flight, so memory does not grow with the pool), and runs the model and
the fused scorer on the decoded batches in order, writing one shard per batch.
"""
from __future__ import annotations

from ..pool import DecodeSettings
from ..pool.errors import DecoderDied
from ..pool.workers import decode_in_order
from .batch_scoring import score_decoded_batch


def score_pool_locally(spec, runner, store, *, alpha: float, batch_size: int, workers: int, progress,
                       embeddings: bool = False) -> None:
    """Score every batch of `spec` that has no shard in `store` yet (with embeddings, keep each row's
    selection embedding in the shards too)."""
    settings = DecodeSettings(input_size=runner.input_size, in_channels=runner.in_channels)
    done = store.completed_batches()
    first = min(set(range(spec.num_batches(batch_size))) - done, default=None)
    if first is None:
        return
    pending = (raw for raw in spec.iter_batches(batch_size, start_batch=first) if raw.index not in done)
    decoded_batches = decode_in_order(pending, settings, workers)
    try:
        for decoded in decoded_batches:
            table = score_decoded_batch(decoded, runner, alpha=alpha, embeddings=embeddings)
            store.write_shard(decoded.index, table)
            progress.update(table.num_rows, errors=table.num_rows - table.column("status").to_pylist().count("ok"))
    except DecoderDied as exc:
        raise DecoderDied(f"{exc}; every batch scored so far is kept: rerun with resume=True (--resume); add "
                          "workers=0 (--workers 0) to decode in the main process") from exc.__cause__
    finally:
        decoded_batches.close()  # stops the decoder workers now, also when scoring stopped on an error or a signal
