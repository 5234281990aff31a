"""Drawing one synthetic "scan": textured tissue, maybe a lesion, maybe a corner marker.

The lesion's *shape and texture* carry the class: a "round" lesion is a smooth,
homogeneous ellipse; a "spiculated" one has a lobulated border with thin spikes and
a mottled inside. Both have the same size and mean brightness distribution, so
neither size nor brightness gives the class away. The lesion sits anywhere in the
central part of the body, never reaching the corners where the marker goes.

The marker is an L-shaped bright mark in a top corner (like a burned-in laterality
letter) that has nothing to do with the lesion. make_synthetic_pool draws it far
more often on one class: a shortcut a classifier can learn instead of the lesion,
being right for the wrong reason, with its Grad-CAM on the corner, outside the ROI.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

LESION_KINDS = ("round", "spiculated")


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """[size, size] float32 smooth random field, roughly unit variance, `cells` bumps across."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))


def render_scene(rng: np.random.Generator, size: int, lesion: str | None,
                 marker: bool) -> tuple[np.ndarray, np.ndarray]:
    """(image [size, size] float32 in [0, 1], lesion mask [size, size] bool)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres
    image = _body(rng, size, x, y)
    mask = np.zeros((size, size), dtype=bool)
    if lesion is not None:
        alpha = _lesion_alpha(rng, size, x, y, lesion)  # [size, size] coverage in [0, 1]
        image += alpha * _lesion_brightness(rng, size, lesion)
        mask = alpha >= 0.5
    if marker:
        image = np.maximum(image, _marker(rng, size, x, y))
    image += rng.normal(0.0, 0.012, image.shape).astype(np.float32)  # acquisition noise
    return np.clip(image, 0.0, 1.0), mask


def _body(rng, size, x, y) -> np.ndarray:
    """Dark surroundings and an elliptical body of textured tissue."""
    cx, cy = size * rng.uniform(0.47, 0.53), size * rng.uniform(0.47, 0.53)
    ax, ay = size * rng.uniform(0.40, 0.46), size * rng.uniform(0.36, 0.44)
    distance = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    inside = 1.0 / (1.0 + np.exp((distance - 1.0) * size / 6.0))  # soft skin line
    tissue = 0.30 + 0.06 * smooth_noise(rng, size, 5) + 0.035 * smooth_noise(rng, size, max(8, size // 6))
    return (0.04 + inside * (tissue - 0.04)).astype(np.float32)


def _lesion_alpha(rng, size, x, y, kind: str) -> np.ndarray:
    radius = size * rng.uniform(0.075, 0.115)
    # Kept below the corner markers' reach: the furthest spike (0.216 size) stays clear of them.
    cx, cy = size * rng.uniform(0.3, 0.7), size * rng.uniform(0.42, 0.66)
    turn = rng.uniform(0, np.pi)
    dx, dy = x - cx, y - cy
    u = dx * np.cos(turn) + dy * np.sin(turn)
    v = -dx * np.sin(turn) + dy * np.cos(turn)
    if kind == "round":
        aspect = rng.uniform(0.75, 1.3)
        r = np.sqrt((u / aspect) ** 2 + (v * aspect) ** 2)
        border = np.full_like(r, radius)
    elif kind == "spiculated":
        r = np.sqrt(u**2 + v**2)
        theta = np.arctan2(v, u)
        lobes = rng.integers(4, 8)
        border = radius * (
            0.9
            + 0.18 * np.sin(lobes * theta + rng.uniform(0, 2 * np.pi))
            + 0.10 * np.sin((2 * lobes + 1) * theta + rng.uniform(0, 2 * np.pi))
        )
        for angle in rng.uniform(-np.pi, np.pi, rng.integers(5, 9)):
            off = np.angle(np.exp(1j * (theta - angle)))  # angular distance in (-pi, pi]
            border = border + radius * rng.uniform(0.4, 0.7) * np.exp(-((off / 0.07) ** 2))
    else:
        raise ValueError(f"lesion kind must be one of {LESION_KINDS}, got {kind!r}")
    return np.clip(border - r + 0.5, 0.0, 1.0).astype(np.float32)  # one-pixel anti-aliased edge


def _lesion_brightness(rng, size, kind: str) -> np.ndarray:
    level = rng.uniform(0.22, 0.34)
    if kind == "round":
        return np.float32(level) + 0.015 * smooth_noise(rng, size, 6)
    mottle = smooth_noise(rng, size, max(10, size // 5))  # heterogeneous, necrotic-looking inside
    return np.float32(level) * (1.0 + 0.45 * mottle)


def _marker(rng, size, x, y) -> np.ndarray:
    """An 'L' of two bright bars in the top-left or top-right corner (0 elsewhere)."""
    length, thickness, margin = 0.15 * size, max(2.0, 0.035 * size), 0.05 * size
    left = rng.random() < 0.5
    x0 = margin if left else size - margin - length
    y0 = margin
    vertical_x0 = x0 if left else x0 + length - thickness
    vertical = (x >= vertical_x0) & (x < vertical_x0 + thickness) & (y >= y0) & (y < y0 + length)
    horizontal = (x >= x0) & (x < x0 + length) & (y >= y0 + length - thickness) & (y < y0 + length)
    return np.where(vertical | horizontal, np.float32(rng.uniform(0.85, 0.95)), np.float32(0.0))
