"""Small pools written to disk for the `egal score` tests: every encoding, every ROI kind, bad rows."""
from __future__ import annotations

import contextlib
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from egal.pool.encode import encode_dicom, encode_jpeg, encode_png

CLASSES = ("benign", "malignant", "normal")


def lesion_scan(rng, size: int, box):
    """A grey 'scan' [size, size] uint8: noisy background, a bright lesion inside box (x0, y0, x1, y1)."""
    image = rng.normal(60, 12, (size, size))
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx, r = (y0 + y1) / 2, (x0 + x1) / 2, max(x1 - x0, y1 - y0) / 2
    image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] += 120
    return np.clip(image, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, image_format: str, instance: int) -> bytes:
    if image_format == "png":
        return encode_png(pixels)
    if image_format == "rgb_png":
        return encode_png(np.stack([pixels, pixels // 2, 255 - pixels], axis=-1))
    if image_format == "jpeg":
        return encode_jpeg(pixels)
    if image_format == "png16":
        return encode_png(pixels.astype(np.uint16) * 257)
    if image_format == "dicom":
        return encode_dicom(pixels.astype(np.uint16) * 16, bits_stored=12, rescale=(1.0, -1024.0), instance=instance)
    raise ValueError(image_format)


def make_rows(n: int, *, folder, size: int = 80, image_format: str = "png", roi: str = "mask",
              storage: str = "inline", empty_every: int = 0, seed: int = 0, id_prefix: str = "scan"):
    """Rows of a valid pool; files (for storage='path' or roi='mask_path') are written under `folder`."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        side = int(rng.integers(size // 8, size // 3))
        x0, y0 = (int(v) for v in rng.integers(0, size - side, 2))
        box = (x0, y0, x0 + side, y0 + side)
        row = {"id": f"{id_prefix}_{i:04d}", "label": CLASSES[i % 3] if i % 2 else None}
        data = encode(lesion_scan(rng, size, box), image_format, i + 1)
        if storage == "path":
            row["image_path"] = _write(folder, f"images/{row['id']}.bin", data)
        else:
            row["image"] = data
        empty = empty_every and i % empty_every == 0
        mask = np.zeros((size // 2, size // 2), np.uint8)  # masks at half resolution: resized on read
        if not empty:
            mask[box[1] // 2:box[3] // 2, box[0] // 2:box[2] // 2] = 255
        if roi == "mask":
            row["mask"] = None if empty else encode_png(mask)
        elif roi == "mask_path":
            row["mask_path"] = None if empty else _write(folder, f"masks/{row['id']}.png", encode_png(mask))
        elif roi == "boxes":
            row["boxes"] = [] if empty else [list(box), [0, 0, 4, 4]]
        rows.append(row)
    return rows


def write_pool(path, rows, schema=None) -> str:
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path)
    return str(path)


def _write(folder, relative: str, data: bytes) -> str:
    target = os.path.join(folder, relative)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as f:
        f.write(data)
    return relative


def save_tiny_model(path, *, input_size=(64, 64), seed: int = 0, varied: bool = True) -> str:
    """A tiny_cnn with a linear head over CLASSES, grey input, saved to `path`. varied: BatchNorm statistics
    away from the identity, so that predictions vary between images."""
    import torch

    from egal.models import build_model, save_model

    torch.manual_seed(seed)
    model = build_model("tiny_cnn", "linear", CLASSES, input_size=input_size, in_channels=1)
    if varied:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.5, 2.0)
    save_model(model, path)
    return str(path)


@contextlib.contextmanager
def shards_kept():
    """Runs inside merge their shards but keep the parts folder, as a run killed right after merging does."""
    from egal.pipeline import shard_store

    keep = shard_store.ShardStore._discard_parts
    shard_store.ShardStore._discard_parts = lambda self: None
    try:
        yield
    finally:
        shard_store.ShardStore._discard_parts = keep
