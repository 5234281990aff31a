"""`egal pool from-brats`: BraTS cases in their NIfTI layout -> axial slices with tumour masks.

Layout: one folder per case (found anywhere below DIR) holding CASE_<modality>.nii.gz and
CASE_seg.nii.gz (BraTS 2017-2021: BraTS20_Training_001_t1ce.nii.gz) or CASE-<modality>.nii.gz
and CASE-seg.nii.gz (BraTS 2023: BraTS-GLI-00000-000-t1c.nii.gz); .nii works too. Modality
names are matched across editions: t1ce = t1c, flair = t2f, t2 = t2w, t1 = t1n.

Per case, one volume at a time (bounded memory):
  1. both volumes are reoriented to RAS (nibabel.as_closest_canonical) and must have one shape;
  2. intensities are windowed per volume between the `window` percentiles of the brain voxels
     (nonzero: BraTS is skull-stripped), scaled to 0..65535 and stored as 16-bit PNG;
  3. the ROI is a tumour sub-region of the segmentation, for both label conventions
     (2017-2021: 1 necrosis, 2 oedema, 4 enhancing; 2023: 1, 2, 3 enhancing):
       wt  whole tumour       labels 1, 2, 3, 4
       tc  tumour core        labels 1, 3, 4
       et  enhancing tumour   labels 3, 4
  4. every `slice_step`-th axial slice is considered: a slice whose ROI has at least
     `min_roi_area` pixels is kept; one with a smaller ROI is skipped; of the slices without ROI
     but with brain (at least 1 % of the slice), round(no_tumour_share x kept tumour slices) are
     kept, evenly spaced, with an empty mask (labelled `no_tumour_label` when given);
  5. slices are shown anterior up, patient's left on the left (RAS x increases to the right).

Labels come per case from `labels`: BraTS's own name_mapping.csv (Grade, with the case names
in its *_subject_ID columns: BraTS_2020_subject_ID, ...) or a CSV with columns case,label (or any
two columns: case, then label). A case missing from it is kept unlabeled. The case name is the
group column (patient-level splits: egal simulate --group-column group). Columns: id
(CASE_zNNN), image, mask, label, group, slice, roi_pixels.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from .._checks import bad_argument, check_choice, check_int
from ..errors import EgalError
from ..pool.encode import encode_png
from .errors import SourceError
from .imaging import encode_mask
from .options import check_common, existing_folder
from .session import ImportResult, ImportSession
from .tables import cell_or_none, read_table
from .writer import pool_schema

ROI_LABELS = {"wt": (1, 2, 3, 4), "tc": (1, 3, 4), "et": (3, 4)}
MODALITY_NAMES = {"t1ce": ("t1ce", "t1c"), "t1": ("t1", "t1n"), "t2": ("t2", "t2w"), "flair": ("flair", "t2f")}
MODALITY_NAMES.update({alias: names for names in list(MODALITY_NAMES.values()) for alias in names})
SEG_FILE = re.compile(r"^(?P<case>.+?)[_-]seg\.nii(\.gz)?$")
BRAIN_SHARE = 0.01  # a slice with less brain than this is the volume's empty top or bottom


@dataclass(frozen=True)
class BratsOptions:
    """source: a folder of BraTS cases; out: the pool to write. See the module docstring."""

    source: str
    out: str
    modality: str = "t1ce"
    labels: str | None = None
    roi: str = "wt"
    min_roi_area: int = 100
    no_tumour_share: float = 0.0
    no_tumour_label: str | None = None
    slice_step: int = 1
    window: tuple[float, float] = (0.5, 99.5)
    images_as: str = "bytes"
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        check_common(self)
        check_choice(self.modality, "modality", tuple(MODALITY_NAMES))
        check_choice(self.roi, "roi", tuple(ROI_LABELS))
        check_int(self.min_roi_area, "min_roi_area")
        check_int(self.slice_step, "slice_step")
        share = self.no_tumour_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 10:
            raise bad_argument(EgalError, "no_tumour_share", f"must be a number in [0, 10], got {share!r}")
        try:
            low, high = (float(v) for v in self.window)
        except (TypeError, ValueError):
            low = high = float("nan")
        if not (0 <= low < high <= 100):  # NaN fails too
            raise bad_argument(EgalError, "window",
                               f"must be two percentiles low < high in [0, 100], got {self.window!r}")


def from_brats(source, out, **options) -> ImportResult:
    """Imports BraTS cases (see egal.importers.brats) into a pool at `out`; keyword arguments are
    BratsOptions' fields (modality, labels, roi, min_roi_area, no_tumour_share, ...). Needs nibabel
    (pip install 'egal-al[import]')."""
    return import_brats(BratsOptions(str(source), str(out), **options))


def import_brats(o: BratsOptions) -> ImportResult:
    import nibabel  # noqa: F401  (fail before any work when it is missing)

    root = existing_folder(o.source, "the BraTS folder")
    cases, without_seg = find_cases(root, o.modality)
    if not cases and not without_seg:
        raise SourceError(f"{str(root)!r} holds no BraTS case (no *_seg.nii.gz or *-seg.nii.gz file below it)")
    labels = read_case_labels(o.labels) if o.labels else {}
    extra = [pa.field("slice", pa.int32()), pa.field("roi_pixels", pa.int32())]
    with ImportSession(f"BraTS {root}", o.out, pool_schema(o.images_as, "mask", extra), overwrite=o.overwrite,
                       files_folder=o.images_as == "paths", progress=o.progress, total=len(cases),
                       unit="cases") as session:
        for case in without_seg:
            session.ledger.skip("case without segmentation file (no ROI to choose slices by)", case)
        for case, (image_file, seg_file) in cases.items():
            if image_file is None:
                session.ledger.skip(f"case without a {o.modality} volume", case)
            else:
                label = labels.get(case)
                if labels and label is None:
                    session.ledger.note("case not in the labels table (kept unlabeled)", case)
                _import_case(session, o, case, image_file, seg_file, label)
            session.advance()
    return session.result


def find_cases(root: Path, modality: str) -> tuple[dict[str, tuple[Path | None, Path]], list[str]]:
    """({case: (modality volume or None, segmentation)}, [cases with the modality but no segmentation])."""
    names = MODALITY_NAMES[modality]
    cases: dict[str, tuple[Path | None, Path]] = {}
    files = _nifti_files(root)
    for seg in files:
        match = SEG_FILE.match(seg.name)
        if match:
            if match["case"] in cases:
                raise SourceError(f"case {match['case']!r} appears twice, {str(cases[match['case']][1])!r} and "
                                  f"{str(seg)!r}: case names must be unique (import the folders one at a time)")
            cases[match["case"]] = (_volume(seg.parent, match["case"], names), seg)
    pattern = re.compile(r"^(?P<case>.+?)[_-](" + "|".join(map(re.escape, names)) + r")\.nii(\.gz)?$")
    matches = (pattern.match(p.name) for p in files)
    without = sorted({m["case"] for m in matches if m and m["case"] not in cases})
    return cases, without


def _nifti_files(root: Path) -> list[Path]:
    """The .nii and .nii.gz files below root, sorted, through linked folders too (a case kept elsewhere and
    linked into DIR), each real folder once."""
    found, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        found += [Path(folder) / name for name in files if name.endswith((".nii", ".nii.gz"))]
    return sorted(found)


def _volume(folder: Path, case: str, names) -> Path | None:
    for name in names:
        for sep in ("_", "-"):
            for suffix in (".nii.gz", ".nii"):
                path = folder / f"{case}{sep}{name}{suffix}"
                if path.is_file():
                    return path
    return None


def read_case_labels(path) -> dict[str, str]:
    """{case: label} from name_mapping.csv (Grade, *_subject_ID) or a case,label CSV."""
    rows = read_table(path, (), "the labels table (labels)")
    header = list(rows[0]) if rows else []
    if "Grade" in header:
        id_columns = [c for c in header if c.endswith("subject_ID")]
        if not id_columns:
            raise SourceError(f"labels {str(path)!r} has a Grade column but no *_subject_ID column naming the cases")
        # "NA" where a case has no id of that edition (BraTS 2020's TCGA_TCIA_subject_ID, older editions)
        pairs = [(row[c], row["Grade"]) for row in rows for c in id_columns
                 if cell_or_none(row[c]) and cell_or_none(row["Grade"])]
        return _one_label_each(pairs, path)
    if "case" in header and "label" in header:
        case_column, label_column = "case", "label"
    elif len(header) == 2:
        case_column, label_column = header
    else:
        raise SourceError(f"labels {str(path)!r} must be BraTS's name_mapping.csv (Grade, BraTS_2020_subject_ID, ...) "
                          f"or a CSV with columns case,label; its columns are {header}")
    return _one_label_each([(row[case_column], row[label_column]) for row in rows
                            if cell_or_none(row[case_column]) and cell_or_none(row[label_column])], path)


def _one_label_each(pairs, path) -> dict[str, str]:
    """{case: label}; SourceError when a case is given two different labels (which one would be a guess)."""
    labels: dict[str, str] = {}
    for case, label in pairs:
        if labels.setdefault(case, label) != label:
            raise SourceError(f"labels {str(path)!r} gives case {case!r} two labels, {labels[case]!r} and {label!r}: "
                              "keep one")
    return labels


def _import_case(session: ImportSession, o: BratsOptions, case: str, image_file: Path, seg_file: Path,
                 label: str | None) -> None:
    import nibabel

    try:
        volume = np.asarray(nibabel.as_closest_canonical(nibabel.load(str(image_file))).dataobj, dtype=np.float32)
        seg = np.asarray(nibabel.as_closest_canonical(nibabel.load(str(seg_file))).dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many kinds for truncated or foreign files
        session.ledger.skip("unreadable NIfTI volume", f"{case}: {exc}")
        return
    if not (np.isfinite(volume).all() and np.isfinite(seg).all()):
        session.ledger.skip("NaN or infinity in the volume or its segmentation", case)
        return
    seg = np.rint(seg).astype(np.int16)
    if volume.ndim != 3 or volume.shape != seg.shape:
        session.ledger.skip("volume and segmentation differ in shape (or are not 3-D)",
                            f"{case}: {volume.shape} vs {seg.shape}")
        return
    brain = volume != 0
    if not brain.any():
        session.ledger.skip("empty volume (all zero)", case)
        return
    scaled = window_volume(volume, brain, o.window)
    roi = np.isin(seg, ROI_LABELS[o.roi])
    del volume, seg
    for z, kind in choose_slices(roi, brain, o).items():
        if kind != "keep" and kind != "no tumour":
            session.ledger.skip(kind, f"{case} slice {z}")
            continue
        slice_label = label if kind == "keep" else (o.no_tumour_label or label)
        _add_slice(session, o, case, z, scaled[:, :, z], roi[:, :, z], slice_label)


def window_volume(volume: np.ndarray, brain: np.ndarray, window) -> np.ndarray:
    """uint16: the volume clipped to the `window` percentiles of its brain voxels, scaled to 0..65535. Voxels
    that are not finite (NaN, inf: a damaged volume) take no part in the window and become 0."""
    finite = np.isfinite(volume)
    values = volume[brain & finite]
    if values.size == 0:
        values = np.zeros(1)
    low, high = np.percentile(values, window)
    if high <= low:
        high = low + 1.0
    scaled = np.clip((np.where(finite, volume, low) - low) / (high - low), 0.0, 1.0)
    return np.round(scaled * 65535.0).astype(np.uint16)


def choose_slices(roi: np.ndarray, brain: np.ndarray, o: BratsOptions) -> dict[int, str]:
    """{axial slice: "keep" | "no tumour" | the reason it is skipped}, for every `slice_step`-th slice."""
    area = roi.sum(axis=(0, 1))
    brain_share = brain.mean(axis=(0, 1))
    decided: dict[int, str] = {}
    empty_with_brain = []
    for z in range(0, roi.shape[2], o.slice_step):
        if area[z] >= o.min_roi_area:
            decided[z] = "keep"
        elif area[z] > 0:
            decided[z] = "tumour smaller than min_roi_area (--min-roi-area)"
        elif brain_share[z] < BRAIN_SHARE:
            decided[z] = "slice without brain"
        else:
            empty_with_brain.append(z)
            decided[z] = "slice without tumour (beyond the no-tumour share, --no-tumour-share)"
    wanted = min(len(empty_with_brain), int(round(o.no_tumour_share * sum(v == "keep" for v in decided.values()))))
    if wanted:
        for i in np.linspace(0, len(empty_with_brain) - 1, wanted).round().astype(int):
            decided[empty_with_brain[i]] = "no tumour"
    return dict(sorted(decided.items()))


def _add_slice(session, o: BratsOptions, case: str, z: int, plane: np.ndarray, roi: np.ndarray, label) -> None:
    # RAS: axis 0 runs to the patient's right, axis 1 to anterior; rows = anterior first.
    image = np.ascontiguousarray(np.flipud(plane.T))
    mask = np.ascontiguousarray(np.flipud(roi.T))
    ident = f"{case}_z{z:03d}"
    row = {"id": ident, "label": label, "group": case, "slice": z, "roi_pixels": int(mask.sum())}
    image_png, mask_png = encode_png(image), encode_mask(mask)
    if o.images_as == "paths":
        row["image_path"] = session.write_file(f"{case}/{ident}.png", image_png)
        row["mask_path"] = session.write_file(f"{case}/{ident}_mask.png", mask_png)
    else:
        row["image"], row["mask"] = image_png, mask_png
    session.add(row, has_roi=bool(mask.any()), where=ident)
