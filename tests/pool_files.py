"""Writing small pools for the egal.pool tests: Parquet files and known images."""
from __future__ import annotations

import struct
import zlib
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


PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (grey, grey + alpha, RGB, RGBA)
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_16bit(samples: np.ndarray, interlace: bool = False, colour_key=None) -> bytes:
    """A 16-bit PNG of [h, w, C] uint16 samples (C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA), written here
    because Pillow writes 16 bits for grey only. The rows cycle through all five PNG filters, so that a reader
    unfilters with the right bytes per pixel; `interlace` writes Adam7 passes; `colour_key` a tRNS chunk."""
    height, width, channels = samples.shape
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    stream = bytearray()
    for x0, y0, dx, dy in passes:
        sub = samples[y0::dy, x0::dx]
        if sub.size:
            stream += _filtered_rows(sub.astype(">u2").reshape(sub.shape[0], -1).view(np.uint8), 2 * channels)
    header = struct.pack(">IIBBBBB", width, height, 16, PNG_COLOUR_TYPES[channels], 0, 0, int(interlace))
    chunks = [(b"IHDR", header)]
    if colour_key is not None:
        chunks.append((b"tRNS", struct.pack(f">{len(colour_key)}H", *colour_key)))
    chunks += [(b"IDAT", zlib.compress(bytes(stream))), (b"IEND", b"")]
    framed = (struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
              for kind, data in chunks)
    return b"\x89PNG\r\n\x1a\n" + b"".join(framed)


def _filtered_rows(rows: np.ndarray, bpp: int) -> bytes:
    """[h, row bytes] uint8 -> each row preceded by its filter type (row index mod 5), filtered as PNG says."""
    out = bytearray()
    previous = np.zeros(rows.shape[1], np.int32)
    for index, row in enumerate(rows.astype(np.int32)):
        kind = index % 5
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        upper_left = np.concatenate([np.zeros(bpp, np.int32), previous[:-bpp]])
        if kind == 0:
            predicted = np.zeros_like(row)
        elif kind == 1:
            predicted = left
        elif kind == 2:
            predicted = previous
        elif kind == 3:
            predicted = (left + previous) // 2
        else:
            estimate = left + previous - upper_left
            to_left, to_up, to_corner = abs(estimate - left), abs(estimate - previous), abs(estimate - upper_left)
            predicted = np.where((to_left <= to_up) & (to_left <= to_corner), left,
                                 np.where(to_up <= to_corner, previous, upper_left))
        out.append(kind)
        out += ((row - predicted) % 256).astype(np.uint8).tobytes()
        previous = row
    return bytes(out)
