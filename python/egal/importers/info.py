"""`egal pool info`: what a pool holds, read the way `egal score` would read it.

Rows, columns, classes and their counts, the labelled share, ROI coverage (rows with a mask,
with boxes, without ROI: a null value, no box or an all-zero mask), image formats, sizes and bit
depths (from the headers, without decoding pixels), groups (rows per group), and rows with
problems found without decoding images: an image whose header cannot be read, a mask that is
not a PNG or not of its image's shape, a box outside its image. Streams the pool a batch at a time.

With decode=True every image and ROI is also decoded as `egal score` decodes it (egal.pool.decode,
in `workers` processes), so that a row whose header reads but whose pixels do not (a truncated PNG,
a DICOM without a decoder for its transfer syntax) is found before a long scoring run rather than
reported by it as status 'error'.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._atomic import is_set_aside, stale_temporaries
from .._checks import bad_argument, check_int
from .._display import shown
from ..errors import EgalError
from ..pool import open_pool
from ..pool.decode import DecodeSettings
from ..pool.errors import PathRefused, RowError
from ..pool.labels import LABEL_COLUMN, check_label_column, label_key, reads_as_missing
from ..pool.paths import resolve_inside
from ..pool.rois import check_aspect, check_box, read_mask_png
from ..pool.schema import GROUP_COLUMN
from ..pool.workers import check_worker_count, decode_in_order
from ..progress import Progress
from .errors import SourceError
from .imaging import read_header
from .ledger import SkipLedger

BATCH = 64
SIZES_SHOWN = 5
# Whether a row decodes does not depend on the size it is resized to, so the check resizes to a small one.
DECODE_CHECK = DecodeSettings(input_size=(16, 16))


@dataclass
class PoolInfo:
    path: str
    files: int
    rows: int
    columns: list[str]
    image_column: str
    roi_column: str | None
    labels: dict[str | None, int]
    roi: dict[str, int]  # "mask" / "boxes" / "none" -> rows
    boxes: int  # boxes in all rows with an ROI (a row in error has none)
    formats: dict[str, int]  # "PNG 8-bit grey" -> rows
    sizes: dict[str, int]  # "256x256" -> rows
    group_column: str | None
    groups: dict[str, float] = field(default_factory=dict)  # count, min / median / max rows per group
    problems: SkipLedger = field(default_factory=SkipLedger, repr=False)
    decoded: bool = False  # every image and ROI was decoded, not only its header read
    label_column: str = LABEL_COLUMN
    labels_like_missing: dict[str, int] = field(default_factory=dict)  # "nan" -> rows (egal.pool.labels)

    @property
    def labelled_share(self) -> float:
        return 1.0 - self.labels.get(None, 0) / self.rows if self.rows else 0.0

    def to_dict(self) -> dict:
        return {"path": self.path, "files": self.files, "rows": self.rows, "columns": self.columns,
                "image_column": self.image_column, "roi_column": self.roi_column, "label_column": self.label_column,
                "labels_like_missing": self.labels_like_missing,
                "labels": {k: v for k, v in self.labels.items() if k is not None},  # classes only
                "unlabeled": self.labels.get(None, 0), "labelled_share": round(self.labelled_share, 6),
                "roi": self.roi, "boxes": self.boxes, "formats": self.formats, "sizes": self.sizes,
                "group_column": self.group_column, "groups": self.groups, "decoded": self.decoded,
                "problems": dict(self.problems.skipped), "problem_examples": self.problems.examples}

    def summary(self) -> str:
        def share(n):
            return f"{n} ({100.0 * n / self.rows:.1f} %)"

        labelled = {k: v for k, v in self.labels.items() if k is not None}
        lines = [f"{self.path}: {self.rows} rows in {self.files} file(s); columns {', '.join(self.columns)}"]
        if self.label_column not in self.columns:
            lines.append(f"Labels: none, the pool has no {self.label_column!r} column (--label-column names the "
                         "column of the labels)")
        else:
            lines.append(f"Labels ({self.label_column}): {share(self.rows - self.labels.get(None, 0))} labelled, "
                         f"{len(labelled)} classes"
                         + (": " + ", ".join(f"{shown(k)} {v}"
                                             for k, v in sorted(labelled.items(), key=lambda kv: str(kv[0])))
                            if labelled else ""))
        if self.labels_like_missing:
            lines.append("  labels that read like a missing value, counted as classes: "
                         + ", ".join(f"{k!r} {v}" for k, v in sorted(self.labels_like_missing.items()))
                         + " (if they mean no label, the pool should hold null there)")
        roi = ", ".join(f"{share(v)} {k}" for k, v in self.roi.items() if v)
        lines.append(f"ROI ({self.roi_column or 'no ROI column'}): {roi}"
                     + (f"; {self.boxes} boxes" if self.roi_column == "boxes" else ""))
        lines.append("Images: " + ", ".join(f"{k} {v}" for k, v in self.formats.items()))
        sizes = sorted(self.sizes.items(), key=lambda kv: -kv[1])
        lines.append("Sizes: " + ", ".join(f"{k} {v}" for k, v in sizes[:SIZES_SHOWN])
                     + (f", and {len(sizes) - SIZES_SHOWN} other sizes" if len(sizes) > SIZES_SHOWN else ""))
        if self.group_column and not self.groups["count"]:
            lines.append(f"Groups ({self.group_column}): none, the column is empty in every row "
                         "(patient-level splits need it filled)")
        elif self.group_column:
            g = self.groups
            lines.append(f"Groups ({self.group_column}): {g['count']:.0f}, rows per group min {g['min']:.0f}, "
                         f"median {g['median']:g}, max {g['max']:.0f}"
                         + (f"; {share(g['rows_without_group'])} rows without a group" if g["rows_without_group"]
                            else ""))
        else:
            lines.append("Groups: no group column (patient-level splits need one)")
        unchecked = "" if self.decoded else " (images' pixels not decoded: --decode decodes them as egal score would)"
        if self.problems.skipped:
            lines.append(f"Rows with problems, which egal score gives status 'error'{unchecked}:")
            lines += self.problems.lines()[1:]
        elif self.decoded:
            lines.append("No row with problems: every image, mask and box decoded.")
        else:
            lines.append(f"No row with problems found in the headers, masks and boxes{unchecked}.")
        return "\n".join(lines)


def _say_where_a_replaced_pool_went(pool) -> None:
    """A pool missing because a run was killed while replacing it: said, with where the previous one waits."""
    if not isinstance(pool, (str, os.PathLike)) or os.path.lexists(pool):
        return
    kept = [os.path.basename(copy) for copy in stale_temporaries(pool) if is_set_aside(copy)]
    if kept:
        raise SourceError(f"pool {os.fspath(pool)!r} does not exist: a run was killed while replacing it, and the "
                          f"pool it held is kept beside it as {', '.join(map(repr, kept))}; the import or add-labels "
                          "that writes this path again says how to get it back")


def pool_info(pool, *, group_column: str | None = GROUP_COLUMN, label_column: str = LABEL_COLUMN, decode: bool = False,
              workers: int = 0, progress: bool = False) -> PoolInfo:
    """Describes `pool` (see egal.importers.info); group_column: the patient / group column, None for none
    (a missing "group" column is no error); label_column: the column of the labels (the pool format's "label"
    by default, whose absence means no row is labelled); decode: also decode every image and ROI, in `workers`
    decoder processes (0: in this process)."""
    check_int(workers, "workers", minimum=0)
    check_worker_count(workers)
    if workers and not decode:
        raise bad_argument(EgalError, "workers", "sets the number of decoder processes, which only decoding uses: "
                           "pass decode=True (--decode) too")
    _say_where_a_replaced_pool_went(pool)
    spec = open_pool(pool)
    check_label_column(spec, label_column)
    if group_column not in (None, GROUP_COLUMN):
        spec.check_columns([group_column], "group_column", error=SourceError)
    group = group_column if group_column in spec.columns else None
    labels, roi, formats, sizes, per_group, like_missing = (Counter() for _ in range(6))
    problems, boxes_total = SkipLedger(), 0
    flagged: set[int] = set()  # rows with a problem found from their headers: decoding them adds nothing
    bar = Progress(spec.num_rows, enabled=progress, desc="decoding" if decode else "reading", unit="rows")

    def describe(batch):  # from the headers: one batch's counts and problems
        nonlocal boxes_total
        for i, ident in enumerate(batch.ids):
            found = problems.total_skipped
            label = batch.extra[label_column][i]
            labels[label_key(label)] += 1
            if reads_as_missing(label):
                like_missing[label] += 1
            if group:
                value = batch.extra[group][i]
                per_group[None if value is None else str(value)] += 1
            header = _header(batch.images[i], batch.image_is_path, batch.base_dirs[i], ident, problems)
            if header is not None:
                depth = f"{header.bits}-bit {'grey' if header.channels == 1 else 'colour'}"
                formats[f"{header.format} {depth}"] += 1
                sizes[f"{header.width}x{header.height}"] += 1
            kind, count = _roi(batch, i, header, ident, problems)
            roi[kind] += 1
            boxes_total += count
            if problems.total_skipped > found:
                flagged.add(batch.rows[i])
        return batch

    columns = list(dict.fromkeys([label_column] + ([group] if group else [])))
    described = map(describe, spec.iter_batches(BATCH, columns=columns))
    for batch in decode_in_order(described, DECODE_CHECK, workers) if decode else described:
        if decode:
            for ident, row, error in zip(batch.ids, batch.rows, batch.errors, strict=True):
                if error is not None and row not in flagged:
                    problems.skip(_decode_reason(error), f"{ident}: {error}")
        bar.advance(len(batch))
    bar.close()
    without = per_group.pop(None, 0)  # rows whose group cell is empty belong to no group
    counts = np.array(list(per_group.values()) or [0])
    groups = ({"count": len(per_group), "min": int(counts.min()), "median": float(np.median(counts)),
               "max": int(counts.max()), "rows_without_group": without} if group else {})
    return PoolInfo(spec.path, len(spec.files), spec.num_rows, list(spec.columns), spec.image_column,
                    spec.roi_column, dict(labels), {k: roi.get(k, 0) for k in ("mask", "boxes", "none")}, boxes_total,
                    dict(formats), dict(sizes), group, groups, problems, decode, label_column, dict(like_missing))


def _decode_reason(error: str) -> str:
    """The problem's name for one of decode_batch's row errors ("image: ...", "mask: ...", "boxes: ...")."""
    part = error.split(":", 1)[0]
    return {"image": "image does not decode", "boxes": "boxes do not fit their image"}.get(
        part, "mask does not decode or fit its image")


def _bytes(value, is_path: bool, base_dir: str) -> bytes:
    if not is_path:
        return bytes(value)
    return Path(resolve_inside(base_dir, value)).read_bytes()


def _header(value, is_path, base_dir, ident, problems: SkipLedger):
    if value is None:
        problems.skip("image is null", ident)
        return None
    try:
        return read_header(_bytes(value, is_path, base_dir))
    except (RowError, PathRefused, OSError) as exc:
        problems.skip("image header unreadable", f"{ident}: {exc}")
        return None


def _roi(batch, i, header, ident, problems: SkipLedger):
    """("mask" | "boxes" | "none", number of boxes)."""
    value = batch.rois[i]
    if value is None:
        return "none", 0
    if batch.roi_kind == "boxes":
        boxes = list(value)
        if header is not None:
            try:
                for k, box in enumerate(boxes):
                    check_box(k, box, header.width, header.height, header.orientation)
            except RowError as exc:  # egal score gives the row status 'error': it has no ROI to count
                problems.skip("box outside its image or malformed", f"{ident}: {exc}")
                return "none", 0
        return ("boxes" if boxes else "none"), len(boxes)
    try:
        mask = read_mask_png(_bytes(value, batch.roi_kind == "mask_path", batch.base_dirs[i]))
        if header is not None:
            check_aspect(mask.shape, (header.height, header.width), header.orientation)
    except (RowError, PathRefused, OSError) as exc:
        problems.skip("mask unreadable or not of its image's shape", f"{ident}: {exc}")
        return "none", 0
    return ("mask" if mask.any() else "none"), 0
