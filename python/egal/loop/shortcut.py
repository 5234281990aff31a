"""The shortcut benchmark: a spurious marker that predicts one class, burnt into the pool, never into the test set.

A model can be right for the wrong reason by looking at the marker instead of
the lesion; explanation-guided selection should find those images (confident,
attention off the ROI) and explanation-guided training should unlearn the
marker. Measured per round: accuracy on the clean test set, accuracy on a
marker test copy where the marker sits on the *other* classes' images (a model
that relies on the marker calls them the marker's class), and the share of
marker images among the rows each strategy selects.

The marker is placed outside the ROI (with a margin), at a position drawn per
image from a seeded Generator, so the benchmark is deterministic and the ROI
stays an honest statement of where the finding is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._checks import check_int, is_finite_real, show_number
from ..errors import EgalError

MARKERS = ("square", "text")


@dataclass(frozen=True)
class ShortcutConfig:
    target_class: str = ""  # the class whose pool images get the marker; "" = no shortcut benchmark
    share: float = 0.5  # fraction of that class's pool images that carry it
    marker: str = "square"  # "square" (a bright square) or "text" (a bright letter stamp, like a scanner's side marker)
    size: float = 0.08  # marker side as a fraction of the image's shorter side
    margin: float = 0.03  # gap kept from the ROI and from the image border, same unit
    seed: int = 0

    def __post_init__(self):
        if self.target_class is None:  # an empty YAML value: no benchmark, as ""
            object.__setattr__(self, "target_class", "")
        if not isinstance(self.target_class, str):
            raise EgalError(f"shortcut target_class must be a class name (a string), got {self.target_class!r}")
        if self.marker not in MARKERS:
            raise EgalError(f"shortcut marker must be one of {MARKERS}, got {self.marker!r}")
        for name, low, high, low_in in (("share", 0, 1, False), ("size", 0, 0.5, False), ("margin", 0, 0.5, True)):
            value = getattr(self, name)
            inside = is_finite_real(value) and (low <= value if low_in else low < value) and \
                (value <= high if name == "share" else value < high)
            if not inside:
                bounds = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if name == 'share' else ')'}"
                raise EgalError(f"shortcut {name} must be a number in {bounds}, got {show_number(value)}")
        check_int(self.seed, "shortcut seed", minimum=0)

    @property
    def enabled(self) -> bool:
        return bool(self.target_class)


@dataclass
class ShortcutData:
    images: np.ndarray  # [N, C, H, W] the dataset's images with the marker in the chosen pool rows
    marked: np.ndarray  # [N] bool, rows that carry the marker (pool rows only)
    marker_test_images: np.ndarray  # [T, C, H, W] the test rows, with the marker on every non-target row that fits one
    marker_test_marked: np.ndarray  # [T] bool
    target: int  # class index of the marker's class
    unplaced: int  # chosen rows where no marker position outside the ROI existed (left unmarked)


def marker_patch(kind: str, side: int) -> np.ndarray:
    """[side, side] float32 in [0, 1]: the marker's intensity (burnt in as max(image, patch))."""
    if kind == "square":
        return np.ones((side, side), np.float32)
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(8, int(side * 0.9)))
    left, top, right, bottom = draw.textbbox((0, 0), "R", font=font)
    draw.text(((side - (right - left)) / 2 - left, (side - (bottom - top)) / 2 - top), "R", fill=255, font=font)
    return np.asarray(canvas, np.float32) / 255.0


def find_position(mask: np.ndarray, side: int, margin: int, rng: np.random.Generator) -> tuple[int, int] | None:
    """Top-left (y, x) of a side x side square whose surroundings (margin) miss the ROI and the border:
    the four corners first in random order, then any position on a coarse grid; None if none fits."""
    H, W = mask.shape
    lo, hi_y, hi_x = margin, H - margin - side, W - margin - side
    if hi_y < lo or hi_x < lo:
        return None
    corners = [(lo, lo), (lo, hi_x), (hi_y, lo), (hi_y, hi_x)]
    step = max(1, side // 2)
    grid = [(y, x) for y in range(lo, hi_y + 1, step) for x in range(lo, hi_x + 1, step)]
    candidates = [corners[i] for i in rng.permutation(4)] + [grid[i] for i in rng.permutation(len(grid))]
    for y, x in candidates:
        if not mask[max(0, y - margin):y + side + margin, max(0, x - margin):x + side + margin].any():
            return y, x
    return None


def burn_marker(image: np.ndarray, mask: np.ndarray, patch: np.ndarray, margin: int,
                rng: np.random.Generator) -> np.ndarray | None:
    """A copy of image [C, H, W] with the patch burnt in outside the ROI, or None where it does not fit."""
    side = patch.shape[0]
    spot = find_position(mask, side, margin, rng)
    if spot is None:
        return None
    y, x = spot
    out = image.copy()
    out[:, y:y + side, x:x + side] = np.maximum(out[:, y:y + side, x:x + side], patch[None])
    return out


def build_shortcut(images, masks, labels, classes, pool, test, config: ShortcutConfig) -> ShortcutData:
    """Mark `share` of the target class's pool rows; the test rows stay clean, and a marker test copy of
    them carries the marker on every row of the other classes. Deterministic given config.seed."""
    if config.target_class not in classes:
        raise EgalError(f"shortcut target_class {config.target_class!r} is not a class of the data {list(classes)}")
    target = list(classes).index(config.target_class)
    H, W = images.shape[2:]
    side = max(2, int(round(config.size * min(H, W))))
    margin = int(round(config.margin * min(H, W)))
    patch = marker_patch(config.marker, side)
    rng = np.random.default_rng([config.seed, 7])
    candidates = pool[labels[pool] == target]
    chosen = np.sort(rng.permutation(candidates)[: int(round(config.share * len(candidates)))])
    out = images.copy()
    marked = np.zeros(len(images), dtype=bool)
    unplaced = 0
    for row in chosen:
        burnt = burn_marker(images[row], masks[row], patch, margin, rng)
        if burnt is None:
            unplaced += 1
            continue
        out[row] = burnt
        marked[row] = True
    test_images = images[test].copy()
    test_marked = np.zeros(len(test), dtype=bool)
    for i, row in enumerate(test):
        if labels[row] == target:
            continue
        burnt = burn_marker(images[row], masks[row], patch, margin, rng)
        if burnt is not None:
            test_images[i] = burnt
            test_marked[i] = True
    return ShortcutData(out, marked, test_images, test_marked, target, unplaced)
