"""A few rows of a large pool, by position, reading only the Parquet row groups that hold them."""
from __future__ import annotations

import bisect
import os
from collections import defaultdict

import numpy as np
import pyarrow as pa

from ..pool.batches import RawBatch
from ..pool.errors import PoolError
from ..pool.files import open_parquet


def read_pool_rows(spec, positions) -> RawBatch:
    """The pool rows at global `positions` (read order, as egal score numbers them), in the order given,
    as one RawBatch for egal.pool.decode_batch. spec: an egal.pool.PoolSpec."""
    positions = [int(p) for p in positions]
    bad = [p for p in positions if not 0 <= p < spec.num_rows]
    if bad:
        raise PoolError(f"pool {spec.path!r} has {spec.num_rows} rows; no row {bad[0]}")
    columns = ["id", spec.image_column] + ([spec.roi_column] if spec.roi_column else [])
    file_starts = np.concatenate([[0], np.cumsum(spec.file_rows)]).tolist()
    wanted = defaultdict(lambda: defaultdict(list))  # file -> row group -> [(row in group, order)]
    for order, position in enumerate(positions):
        f = bisect.bisect_right(file_starts, position) - 1
        group_starts = np.concatenate([[0], np.cumsum(spec.row_group_rows[f])]).tolist()
        local = position - file_starts[f]
        g = bisect.bisect_right(group_starts, local) - 1
        wanted[f][g].append((local - group_starts[g], order))
    values = {c: [None] * len(positions) for c in columns}
    base_dirs = [""] * len(positions)
    for f, groups in wanted.items():
        path = spec.files[f]
        try:
            parquet = open_parquet(path)
            for g, picks in groups.items():
                group = parquet.read_row_group(g, columns=columns)
                taken = group.take(pa.array([p for p, _ in picks], type=pa.int64()))
                for c in columns:
                    for value, (_, order) in zip(taken.column(c).to_pylist(), picks, strict=True):
                        values[c][order] = value
                for _, order in picks:
                    base_dirs[order] = os.path.dirname(path)
        except (pa.ArrowException, OSError) as exc:
            raise PoolError(f"{path!r}: reading failed: {exc}") from exc
    return RawBatch(index=0, start_row=positions[0] if positions else 0, ids=values["id"],
                    images=values[spec.image_column], image_is_path=spec.image_column == "image_path",
                    rois=values[spec.roi_column] if spec.roi_column else [None] * len(positions),
                    roi_kind=spec.roi_column, base_dirs=base_dirs, rows=positions)
