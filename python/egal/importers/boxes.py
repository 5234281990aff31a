"""Boxes from annotation tables: merging several readers' boxes, and fitting boxes to their image.

Merging (VinDr-CXR has three radiologists per training image):
  union   every reader's box is kept (exact duplicates once): the ROI is everything anyone marked.
  agree   boxes that at least `min_readers` different readers agree on: boxes of different readers
          overlapping with IoU >= `iou` are linked, linked boxes form a group, and a group marked by
          at least `min_readers` readers becomes one box, the mean of its members' corners. A box
          only one reader drew is dropped.

Fitting: the pool format needs 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height (egal.pool.rois,
which this module reuses for the check). A box outside its image either skips the image
(`out_of_image="skip"`, the default: an annotation that does not fit its image may belong to
another one) or is clipped to it (`"clip"`; a box left with no area is dropped).
"""
from __future__ import annotations

from collections.abc import Sequence

from ..pool.errors import RoiMisfit
from ..pool.rois import check_box  # the pool format's own rule for a valid box

MERGE_RULES = ("union", "agree")
OUT_OF_IMAGE = ("skip", "clip")

Box = tuple[float, float, float, float]


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def merge_readers(by_reader: dict[str, list[Box]], rule: str, *, iou_threshold: float = 0.5,
                  min_readers: int = 2) -> list[Box]:
    """One image's boxes of one finding, {reader: [box, ...]}, merged by `rule` (see the module docstring).

    Deterministic: readers and boxes are taken in sorted order.
    """
    tagged = [(reader, tuple(map(float, box))) for reader in sorted(by_reader) for box in sorted(by_reader[reader])]
    if rule == "union":
        return sorted(dict.fromkeys(box for _, box in tagged))
    if rule != "agree":
        raise ValueError(f"merge rule must be one of {', '.join(MERGE_RULES)}, got {rule!r}")
    parent = list(range(len(tagged)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (reader_i, box_i) in enumerate(tagged):
        for j in range(i + 1, len(tagged)):
            reader_j, box_j = tagged[j]
            if reader_i != reader_j and iou(box_i, box_j) >= iou_threshold:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(tagged)):
        groups.setdefault(root(i), []).append(i)
    merged = []
    for members in groups.values():
        if len({tagged[i][0] for i in members}) >= min_readers:
            corners = [tagged[i][1] for i in members]
            merged.append(tuple(sum(c[k] for c in corners) / len(corners) for k in range(4)))
    return sorted(merged)


def fit_boxes(boxes: Sequence[Sequence[float]], width: int, height: int, out_of_image: str,
              orientation: int = 1) -> tuple[list[list[float]], int, int]:
    """(boxes that satisfy the pool format, how many were clipped, how many lay wholly outside the image and were
    dropped); RowError with the reason when a box does not fit and out_of_image is "skip", or when a box is empty
    or inverted."""
    kept, clipped, dropped = [], 0, 0
    for k, box in enumerate(boxes):
        try:
            kept.append(list(check_box(k, box, width, height, orientation)))
            continue
        except RoiMisfit:  # outside the image; any other fault of a box is raised as it is
            if out_of_image == "skip":
                raise
        x0, y0 = max(0.0, float(box[0])), max(0.0, float(box[1]))
        x1, y1 = min(float(width), float(box[2])), min(float(height), float(box[3]))
        if x0 < x1 and y0 < y1:
            kept.append([x0, y0, x1, y1])
            clipped += 1
        else:
            dropped += 1
    return kept, clipped, dropped


def fitted_box_notes(given: int, clipped: int, dropped: int) -> list[str]:
    """What --out-of-image clip did to a row's boxes, as the import's notes: a box wholly outside its image is
    dropped, not clipped, and a row that lost every box is kept without an ROI."""
    notes = ["box clipped to its image"] if clipped else []
    if dropped == given and given:
        notes.append("every box outside its image: row kept without an ROI")
    elif dropped:
        notes.append("box wholly outside its image dropped")
    return notes
