"""Writing small pools for the egal.pool tests: Parquet files and known images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from egal.pool.encode import encode_png


def write_pool(path: Path, columns: dict, schema: pa.Schema | None = None, row_group_size: int | None = None) -> Path:
    """Writes {name: list of values} as one Parquet file and returns its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(columns, schema=schema) if schema is not None else pa.table(columns)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def gradient(h: int, w: int, high: int = 255, dtype=np.uint8) -> np.ndarray:
    """[h, w] a known ramp from 0 to `high`, different along both axes."""
    y, x = np.mgrid[0:h, 0:w]
    ramp = (x * (w - 1 - 0) + 0.5 * y * (w - 1)) / ((w - 1) ** 2 + 0.5 * (h - 1) * (w - 1))
    return np.round(ramp * high).astype(dtype)


def png_grey(h: int = 16, w: int = 16, value: int | None = None) -> bytes:
    pixels = gradient(h, w) if value is None else np.full((h, w), value, np.uint8)
    return encode_png(pixels)


def simple_pool(path: Path, n: int = 5, **extra_columns) -> Path:
    """n rows of 16 x 16 grey PNGs with ids r0..r{n-1}."""
    columns = {"id": [f"r{i}" for i in range(n)], "image": [png_grey(value=i * 10) for i in range(n)]}
    columns.update(extra_columns)
    return write_pool(path, columns)
