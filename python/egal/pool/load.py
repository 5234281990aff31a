"""Decoding a whole (small or medium) pool into memory, for training and simulations.

Batches are decoded in this process (workers=0) or in a pool of worker processes
(forkserver where the platform has it, else spawn: forking a process that may hold
PyTorch or OpenMP threads is unsafe). At most 2 * workers batches are in flight, so
the raw bytes of the pool are never all in memory at once; the decoded arrays are.
"""
from __future__ import annotations

import multiprocessing
import numbers
import os
import warnings
from collections import deque
from typing import Dict, Sequence

import numpy as np
import pyarrow.compute as pc

from .decode import DecodeSettings, decode_batch
from .errors import MAX_LISTED_ROWS, PoolError
from .files import open_parquet
from .spec import PoolSpec, open_pool
from .workers import watch_parent

LOAD_BATCH_ROWS = 64


def load_pool_arrays(
    path_or_spec,
    settings: DecodeSettings,
    *,
    columns: Sequence[str] = ("label",),
    workers: int = 0,
    labeled_only: bool = False,
) -> Dict[str, np.ndarray]:
    """All rows (or the labelled ones) decoded, in read order.

    Returns {"ids": [N] str, "rows": [N] int64 global row numbers,
    "images": [N, C, H, W] float32, "masks": [N, Hm, Wm] uint8, "has_roi": [N] bool,
    "errors": [N] object (None or the reason), and each requested column: [N] object
    array (None for nulls)}. A "label" column that the pool lacks reads as all None.
    labeled_only keeps the rows whose label is not null (the pool must have a label column).
    Rows that cannot be decoded are kept (zeros, with the reason in "errors") and also
    warned about, once per call, with an UndecodedRows warning that lists them.
    """
    spec = path_or_spec if isinstance(path_or_spec, PoolSpec) else open_pool(path_or_spec)
    if not isinstance(settings, DecodeSettings):
        raise TypeError(f"settings must be a DecodeSettings, got {type(settings).__name__}")
    if not isinstance(workers, numbers.Integral) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"workers must be a non-negative integer, got {workers!r}")
    if isinstance(columns, str):
        raise ValueError(f"columns must be a sequence of column names, got the string {columns!r}")
    columns = list(dict.fromkeys(columns))
    if labeled_only and not spec.has_label:
        raise PoolError(f"labeled_only=True, but pool {spec.path!r} has no 'label' column")
    total = _count_labeled(spec) if labeled_only else spec.num_rows
    read = list(dict.fromkeys(columns + (["label"] if labeled_only else [])))

    height, width = settings.input_size
    out = {
        "ids": np.empty(total, dtype=object),
        "rows": np.empty(total, dtype=np.int64),
        "images": np.zeros((total, settings.in_channels, height, width), dtype=np.float32),  # [N, C, H, W]
        "masks": np.zeros((total, *settings.mask_hw), dtype=np.uint8),  # [N, Hm, Wm]
        "has_roi": np.zeros(total, dtype=bool),
        "errors": np.empty(total, dtype=object),
    }
    extra = {c: np.empty(total, dtype=object) for c in columns}

    def raw_batches():
        for raw in spec.iter_batches(LOAD_BATCH_ROWS, columns=read):
            if labeled_only:
                raw = raw.select([i for i, label in enumerate(raw.extra["label"]) if label is not None])
                if not len(raw):
                    continue
            yield raw

    filled = 0
    for decoded in _decode_all(raw_batches(), settings, workers):
        stop = filled + len(decoded)
        out["ids"][filled:stop] = decoded.ids
        out["rows"][filled:stop] = decoded.rows
        out["images"][filled:stop] = decoded.images
        out["masks"][filled:stop] = decoded.masks
        out["has_roi"][filled:stop] = decoded.has_roi
        out["errors"][filled:stop] = decoded.errors
        for c in columns:
            extra[c][filled:stop] = decoded.extra[c]
        filled = stop
    if filled != total:
        raise PoolError(f"pool {spec.path!r} changed while it was read ({filled} rows read, {total} expected)")
    out["ids"] = out["ids"].astype(str)
    out.update(extra)
    failed = [i for i, error in enumerate(out["errors"]) if error is not None]
    if failed:
        warnings.warn(UndecodedRows(spec.path, [(int(out["rows"][i]), str(out["ids"][i]), out["errors"][i],
                                                 {c: out[c][i] for c in columns}) for i in failed]), stacklevel=2)
    return out


class UndecodedRows(UserWarning):
    """Warned by load_pool_arrays when rows cannot be decoded; their arrays are zeros and their
    `errors` entry says why. `failures` lists (row, id, reason, {requested column: value})."""

    def __init__(self, path: str, failures):
        self.path = path
        self.failures = list(failures)
        shown = "; ".join(f"row {row} (id {ident!r}): {reason}" for row, ident, reason, _ in self.failures[:MAX_LISTED_ROWS])
        more = len(self.failures) - MAX_LISTED_ROWS
        super().__init__(f"{len(self.failures)} row(s) of pool {path!r} cannot be decoded: {shown}"
                         + (f"; and {more} more" if more > 0 else ""))


def _count_labeled(spec: PoolSpec) -> int:
    count = 0
    for path in spec.files:
        for batch in open_parquet(path).iter_batches(columns=["label"]):
            count += batch.num_rows - batch.column("label").null_count
    return count


def _decode_all(raw_batches, settings: DecodeSettings, workers: int):
    """Decoded batches in order; with workers, a bounded window of batches in flight."""
    if workers == 0:
        for raw in raw_batches:
            yield decode_batch(raw, settings)
        return
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    # watch_parent: a worker never outlives this process (killed or not), see egal.pool.workers.
    parent = os.getpid() if method == "spawn" else None
    with multiprocessing.get_context(method).Pool(workers, initializer=watch_parent, initargs=(parent,)) as pool:
        in_flight: deque = deque()
        for raw in raw_batches:
            in_flight.append(pool.apply_async(decode_batch, (raw, settings)))
            if len(in_flight) >= 2 * workers:
                yield in_flight.popleft().get()
        while in_flight:
            yield in_flight.popleft().get()
