"""make_synthetic_pool: the built-in demonstration data set, a lesion classification
task with a "right for the wrong reason" trap.

Each row is a greyscale "scan" (egal.demo_data.scenes): textured tissue and,
depending on the class, a round lesion (class 0, e.g. "benign"), a spiculated one
(class 1, "malignant") or none (class 2, "normal", when three classes are asked
for). The expert ROI is always the lesion; a lesion-free image has no ROI.

The trap: a bright corner marker unrelated to the lesion is drawn on
`shortcut_fraction` of class-1 images and on 5 % of the others in the "pool" split,
so a classifier can score well by looking at the corner. In the "test" split the
marker is drawn on 20 % of every class, so the shortcut does not pay there. The
`shortcut` column says which images carry it (for reports, never for training).

Columns: id, image or image_path, mask / mask_path / boxes (or no ROI column),
label (class name, null for unlabeled rows), split ("pool" or "test"), shortcut.
Everything is deterministic given the seed.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa

from .._checks import check_choice, check_fraction, check_int
from ..errors import EgalError
from ..pool.encode import encode_dicom, encode_jpeg, encode_png
from ..pool.writer import write_pool_file
from .scenes import render_scene

IMAGE_FORMATS = ("png", "jpeg", "png16", "dicom")
STORAGES = ("inline", "path")
ROI_KINDS = ("mask", "mask_path", "boxes", "none")
LESION_OF_CLASS = ("round", "spiculated", None)
TEST_FRACTION = 0.2
MARKER_RATE_OTHER_CLASSES = 0.05
MARKER_RATE_TEST = 0.2
ROW_GROUP_ROWS = 128
# The DICOM files store 12-bit values with a CT-like rescale, so the Modality LUT is exercised.
DICOM_RESCALE = (1.0, -1024.0)


def make_synthetic_pool(
    out_dir,
    n: int = 600,
    *,
    seed: int = 0,
    image_size: int = 128,
    image_format: str = "png",
    storage: str = "inline",
    roi: str = "mask",
    empty_roi_fraction: float = 0.05,
    classes: Sequence[str] = ("benign", "malignant", "normal"),
    label_fraction: float = 1.0,
    files: int = 1,
    shortcut_fraction: float = 0.6,
) -> Path:
    """Writes the pool and returns the path to open: out_dir/pool.parquet, or the
    directory out_dir/pool holding `files` Parquet files when files > 1.

    Image files (storage="path") go to images/ and masks to masks/ beside the
    Parquet file(s). empty_roi_fraction: share of lesion images whose ROI is left
    out (null), as when an annotator skipped them. label_fraction: share of "pool"
    split rows that keep their label (test rows are always labelled).
    """
    _check_arguments(n, seed, image_size, image_format, storage, roi, empty_roi_fraction, classes, label_fraction,
                     files, shortcut_fraction)
    out_dir = Path(out_dir)
    target = out_dir / "pool.parquet" if files == 1 else out_dir / "pool"
    folder = out_dir if files == 1 else target
    folder.mkdir(parents=True, exist_ok=True)
    if files > 1:
        _clear_old_parts(folder)

    rng = np.random.default_rng(seed)
    class_of_row = rng.permutation(np.arange(n) % len(classes))
    is_test = np.zeros(n, dtype=bool)
    is_test[rng.permutation(n)[: int(round(TEST_FRACTION * n))]] = True
    pool_rows = np.flatnonzero(~is_test)
    unlabeled = rng.permutation(pool_rows)[: int(round((1.0 - label_fraction) * len(pool_rows)))]
    has_label = np.ones(n, dtype=bool)
    has_label[unlabeled] = False

    rows = {"id": [], "image": [], "roi": [], "label": [], "split": [], "shortcut": []}
    for i in range(n):
        row_rng = np.random.default_rng([seed, i])
        cls = int(class_of_row[i])
        if is_test[i]:
            marker_rate = MARKER_RATE_TEST
        else:
            marker_rate = shortcut_fraction if cls == 1 else MARKER_RATE_OTHER_CLASSES
        marker = bool(row_rng.random() < marker_rate)
        withhold_roi = bool(row_rng.random() < empty_roi_fraction)
        image, mask = render_scene(row_rng, image_size, LESION_OF_CLASS[cls], marker)  # [S, S], [S, S]
        ident = f"syn_{i:05d}"
        rows["id"].append(ident)
        rows["image"].append(_encode_image(image, image_format, i))
        rows["roi"].append(None if withhold_roi or not mask.any() else mask)
        rows["label"].append(classes[cls] if has_label[i] else None)
        rows["split"].append("test" if is_test[i] else "pool")
        rows["shortcut"].append(marker)

    bounds = np.linspace(0, n, files + 1).round().astype(int)
    # zip(..., strict=False): with two classes, only the first two lesion kinds are used.
    metadata = {"egal_synthetic": json.dumps(dict(
        n=n, seed=seed, image_size=image_size, image_format=image_format, storage=storage, roi=roi,
        empty_roi_fraction=empty_roi_fraction, classes=list(classes), label_fraction=label_fraction,
        shortcut_fraction=shortcut_fraction, lesions=dict(zip(classes, LESION_OF_CLASS, strict=False)),
    ))}
    for part, (start, stop) in enumerate(pairwise(bounds)):
        path = target if files == 1 else folder / f"part-{part:05d}.parquet"
        table = _table(rows, range(start, stop), folder, image_format, storage, roi)
        write_pool_file(table.replace_schema_metadata(metadata), path, row_group_rows=ROW_GROUP_ROWS)
    return target


def _encode_image(image: np.ndarray, image_format: str, index: int) -> bytes:
    if image_format == "png":
        return encode_png(np.round(image * 255).astype(np.uint8))
    if image_format == "jpeg":
        return encode_jpeg(np.round(image * 255).astype(np.uint8), quality=90)
    if image_format == "png16":
        return encode_png(np.round(image * 65535).astype(np.uint16))
    stored = np.round(image * 4095).astype(np.uint16)
    return encode_dicom(stored, bits_stored=12, rescale=DICOM_RESCALE, instance=index + 1)


def _table(rows: dict, span: range, folder: Path, image_format: str, storage: str, roi: str) -> pa.Table:
    suffix = {"png": ".png", "png16": ".png", "jpeg": ".jpg", "dicom": ".dcm"}[image_format]
    ids = [rows["id"][i] for i in span]
    columns = {"id": pa.array(ids, pa.string())}
    if storage == "inline":
        columns["image"] = pa.array([rows["image"][i] for i in span], pa.binary())
    else:
        (folder / "images").mkdir(exist_ok=True)
        names = []
        for i, ident in zip(span, ids, strict=True):
            names.append(f"images/{ident}{suffix}")
            (folder / names[-1]).write_bytes(rows["image"][i])
        columns["image_path"] = pa.array(names, pa.string())
    masks = [rows["roi"][i] for i in span]
    if roi == "mask":
        columns["mask"] = pa.array([None if m is None else _mask_png(m) for m in masks], pa.binary())
    elif roi == "mask_path":
        (folder / "masks").mkdir(exist_ok=True)
        names = []
        for ident, m in zip(ids, masks, strict=True):
            if m is None:
                names.append(None)
                continue
            names.append(f"masks/{ident}.png")
            (folder / names[-1]).write_bytes(_mask_png(m))
        columns["mask_path"] = pa.array(names, pa.string())
    elif roi == "boxes":
        columns["boxes"] = pa.array([None if m is None else [_bounding_box(m)] for m in masks],
                                    pa.list_(pa.list_(pa.float32())))
    columns["label"] = pa.array([rows["label"][i] for i in span], pa.string())
    columns["split"] = pa.array([rows["split"][i] for i in span], pa.string())
    columns["shortcut"] = pa.array([rows["shortcut"][i] for i in span], pa.bool_())
    return pa.table(columns)


def _mask_png(mask: np.ndarray) -> bytes:
    return encode_png(mask.astype(np.uint8) * 255)


def _bounding_box(mask: np.ndarray) -> list:
    """[x0, y0, x1, y1], half-open, in pixels: covers exactly the mask's rows and columns."""
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _clear_old_parts(folder: Path) -> None:
    """A rerun with fewer files must not leave stale parts behind; other Parquet files are not ours to delete."""
    foreign = [p for p in folder.rglob("*.parquet") if not (p.parent == folder and p.name.startswith("part-"))]
    if foreign:
        raise EgalError(f"{str(folder)!r} holds Parquet files make_synthetic_pool did not write: "
                        f"{[str(p) for p in foreign[:3]]}")
    for old in folder.glob("part-*.parquet"):
        old.unlink()


def _check_arguments(n, seed, image_size, image_format, storage, roi, empty_roi_fraction, classes, label_fraction,
                     files, shortcut_fraction):
    check_int(n, "n")
    check_int(seed, "seed", minimum=0)
    check_int(image_size, "image_size", minimum=32)
    check_int(files, "files")
    if files > n:
        raise EgalError(f"files ({files}) cannot exceed n ({n})")
    check_choice(image_format, "image_format", IMAGE_FORMATS)
    check_choice(storage, "storage", STORAGES)
    check_choice(roi, "roi", ROI_KINDS)
    for name, value in (("empty_roi_fraction", empty_roi_fraction), ("label_fraction", label_fraction),
                        ("shortcut_fraction", shortcut_fraction)):
        check_fraction(value, name)
    if (isinstance(classes, str) or len(classes) not in (2, 3) or len(set(classes)) != len(classes)
            or not all(isinstance(c, str) and c for c in classes)):
        raise EgalError("classes must be 2 or 3 distinct names (round lesion, spiculated lesion[, no lesion]), got "
                        f"{classes!r}")
