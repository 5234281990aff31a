"""Small learnable image/ROI/label arrays for the training and loop tests (no files).

Class c is a square lesion of brightness 0.35 + 0.25 c at a random place on a
noisy dark background; the ROI is the lesion. A few rows can be given an empty
ROI. Every array comes from numpy's Generator(seed).
"""
from __future__ import annotations

import numpy as np

from egal.loop.data import Dataset

CLASSES = ("dim", "mid", "bright")


def lesion_arrays(n: int, size: int = 32, seed: int = 0, empty_roi_every: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    images = rng.normal(0.1, 0.03, (n, 1, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    side = size // 4
    for i, c in enumerate(labels):
        y, x = rng.integers(0, size - side, 2)
        images[i, 0, y:y + side, x:x + side] += 0.35 + 0.25 * c
        masks[i, y:y + side, x:x + side] = 1
        if empty_roi_every and i % empty_roi_every == 0:
            masks[i] = 0
    return np.clip(images, 0, 1), masks, labels


def lesion_dataset(n: int = 90, size: int = 32, seed: int = 0, groups: int = 0) -> Dataset:
    images, masks, labels = lesion_arrays(n, size, seed)
    ids = np.array([f"row_{i:04d}" for i in range(n)])
    group = np.array([f"patient_{i % groups}" for i in range(n)]) if groups else None
    return Dataset(ids, images, masks, labels, CLASSES, group)
