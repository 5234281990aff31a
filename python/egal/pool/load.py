"""Decoding a whole (small or medium) pool into memory, for training and simulations.

Batches are decoded in this process (workers=0) or in worker processes, as
`egal score` decodes them (egal.pool.workers.decode_in_order). At most 2 * workers
batches are in flight, so the raw bytes of the pool are never all in memory at
once; the decoded arrays are.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence

import numpy as np

from .._checks import check_int
from .decode import DecodeSettings
from .errors import DecoderDied, PoolError, UndecodedRows
from .labels import LABEL_COLUMN
from .spec import PoolSpec, open_pool
from .workers import decode_in_order

LOAD_BATCH_ROWS = 64


def _check_fits_in_memory(rows: int, settings: DecodeSettings, path) -> None:
    """Arrays larger than the machine's memory are refused with their size, before the system kills the process
    half way through decoding."""
    height, width = settings.input_size
    mask_h, mask_w = settings.mask_hw
    needed = rows * (settings.in_channels * height * width * 4 + mask_h * mask_w)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: nothing to compare with
        return
    if needed > memory:
        raise PoolError(f"decoding the {rows} rows of pool {path!r} at {height} x {width} needs "
                        f"{needed / 2**30:.1f} GiB in memory, more than this machine's {memory / 2**30:.1f} GiB: use a "
                        "smaller input size, or fewer rows")


def load_pool_arrays(
    path_or_spec,
    settings: DecodeSettings,
    *,
    columns: Sequence[str] = (LABEL_COLUMN,),
    workers: int = 0,
) -> dict[str, np.ndarray]:
    """All rows decoded, in read order.

    Returns {"ids": [N] str, "rows": [N] int64 global row numbers,
    "images": [N, C, H, W] float32, "masks": [N, Hm, Wm] uint8, "has_roi": [N] bool,
    "errors": [N] object (None or the reason), and each requested column: [N] object
    array (None for nulls)}. A "label" column that the pool lacks reads as all None.
    Rows that cannot be decoded are kept (zeros, with the reason in "errors") and also
    warned about, once per call, with an UndecodedRows warning that lists them.
    """
    spec = path_or_spec if isinstance(path_or_spec, PoolSpec) else open_pool(path_or_spec)
    if not isinstance(settings, DecodeSettings):
        raise TypeError(f"settings must be a DecodeSettings, got {type(settings).__name__}")
    check_int(workers, "workers", minimum=0)
    if isinstance(columns, str):
        raise ValueError(f"columns must be a sequence of column names, got the string {columns!r}")
    columns = list(dict.fromkeys(columns))
    total = spec.num_rows

    height, width = settings.input_size
    _check_fits_in_memory(total, settings, spec.path)
    out = {
        "ids": np.empty(total, dtype=object),
        "rows": np.empty(total, dtype=np.int64),
        "images": np.zeros((total, settings.in_channels, height, width), dtype=np.float32),  # [N, C, H, W]
        "masks": np.zeros((total, *settings.mask_hw), dtype=np.uint8),  # [N, Hm, Wm]
        "has_roi": np.zeros(total, dtype=bool),
        "errors": np.empty(total, dtype=object),
    }
    extra = {c: np.empty(total, dtype=object) for c in columns}

    filled = 0
    try:
        raw_batches = spec.iter_batches(LOAD_BATCH_ROWS, columns=columns)
        with contextlib.closing(decode_in_order(raw_batches, settings, workers)) as decoded_batches:
            for decoded in decoded_batches:  # closing: the workers stop here, also on an error or Ctrl-C
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
    except DecoderDied as exc:
        raise DecoderDied(f"{exc} while loading pool {spec.path!r}: load it again, or with workers=0 to decode in "
                          "this process") from exc.__cause__
    if filled != total:
        raise PoolError(f"pool {spec.path!r} changed while it was read ({filled} rows read, {total} expected)")
    out["ids"] = out["ids"].astype(str)
    out.update(extra)
    failed = [i for i, error in enumerate(out["errors"]) if error is not None]
    if failed:
        warnings.warn(UndecodedRows(spec.path, [(int(out["rows"][i]), str(out["ids"][i]), out["errors"][i],
                                                 {c: out[c][i] for c in columns}) for i in failed]), stacklevel=2)
    return out

