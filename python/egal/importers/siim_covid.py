"""`egal pool from-siim-covid`: SIIM-FISABIO-RSNA COVID-19 Detection (Kaggle, 2021).

Layout: DIR/train_study_level.csv (id = "<StudyInstanceUID>_study" and the four one-hot columns
"Negative for Pneumonia", "Typical Appearance", "Indeterminate Appearance", "Atypical
Appearance"), DIR/train_image_level.csv (id = "<image>_image", boxes, label, StudyInstanceUID)
and the images at DIR/train/<StudyInstanceUID>/<SeriesInstanceUID>/<image>.dcm.

Each image gets its study's label (negative, typical, indeterminate or atypical; a study whose
one-hot columns do not hold exactly one 1 is skipped) and its own boxes: the `boxes` cell is a
Python-literal list of {'x', 'y', 'width', 'height'} in the DICOM's pixel coordinates (empty for
"none" images, which get an empty ROI). The id is the image id without "_image"; the group is
the study (a study's images must stay on one side of a split). Images are stored as for
VinDr-CXR (images_as png, bytes or paths; max_side; out_of_image): see egal.importers.vindr_cxr.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from .._checks import check_choice, check_int
from ..pool.errors import RowError
from .box_cells import parse_boxes
from .boxes import OUT_OF_IMAGE
from .errors import SourceError
from .options import check_common, existing_folder
from .session import ImportResult, ImportSession
from .tables import read_table
from .vindr_cxr import IMAGES_AS, add_dicom_row
from .writer import pool_schema

STUDY_CLASSES = {
    "Negative for Pneumonia": "negative",
    "Typical Appearance": "typical",
    "Indeterminate Appearance": "indeterminate",
    "Atypical Appearance": "atypical",
}
IMAGE_COLUMNS = ("id", "boxes", "StudyInstanceUID")


@dataclass(frozen=True)
class SiimOptions:
    """source: the competition folder; out: the pool to write. See the module docstring."""

    source: str
    out: str
    out_of_image: str = "skip"
    images_as: str = "png"
    max_side: int = 1024
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        check_common(self, IMAGES_AS)
        check_choice(self.out_of_image, "out_of_image", OUT_OF_IMAGE)
        check_int(self.max_side, "max_side", minimum=0)


def from_siim_covid(source, out, **options) -> ImportResult:
    """Imports SIIM-COVID-19 (see egal.importers.siim_covid) into a pool at `out`; keyword arguments are
    SiimOptions' fields (images_as, max_side, out_of_image, ...)."""
    return import_siim_covid(SiimOptions(str(source), str(out), **options))


def read_study_labels(path: Path) -> dict[str, str | None]:
    """{StudyInstanceUID: label, or None when the one-hot columns do not hold exactly one 1}."""
    rows = read_table(path, ("id", *STUDY_CLASSES), "the study table (train_study_level.csv)")
    labels = {}
    for row in rows:
        hot = [name for column, name in STUDY_CLASSES.items() if row[column] in ("1", "1.0")]
        study = row["id"][: -len("_study")] if row["id"].endswith("_study") else row["id"]
        label = hot[0] if len(hot) == 1 else None
        if study in labels and labels[study] != label:
            raise SourceError(f"the study table {str(path)!r} lists study {study!r} twice with different labels "
                              f"({labels[study]!r} and {label!r}): keep one row")
        labels[study] = label
    return labels


def index_images(folder: Path) -> dict[str, list[Path]]:
    """{image uid: its paths} of every .dcm below the image folder (one walk, not one per image); a uid filed
    under two studies has two paths, and each row takes the one under its own study."""
    found: dict[str, list[Path]] = {}
    for parent, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(".dcm"):
                found.setdefault(name[:-4], []).append(Path(parent) / name)
    return found


def import_siim_covid(o: SiimOptions) -> ImportResult:
    root = existing_folder(o.source, "the SIIM-COVID-19 folder")
    study_table, image_table = root / "train_study_level.csv", root / "train_image_level.csv"
    for table in (study_table, image_table):
        if not table.is_file():
            raise SourceError(f"{str(root)!r} is not the SIIM-COVID-19 layout: {table.name} is missing")
    if not (root / "train").is_dir():
        raise SourceError(f"the SIIM-COVID-19 image folder {str(root / 'train')!r} does not exist")
    studies = read_study_labels(study_table)
    images = read_table(image_table, IMAGE_COLUMNS, "the image table (train_image_level.csv)")
    files = index_images(root / "train")
    stored = "paths" if o.images_as == "paths" else "bytes"
    extra = [pa.field("source_path", pa.string())]
    with ImportSession(f"SIIM-COVID-19 {root}", o.out, pool_schema(stored, "boxes", extra), overwrite=o.overwrite,
                       progress=o.progress, total=len(images)) as session:
        listed = set()
        for row in images:
            ident = row["id"][: -len("_image")] if row["id"].endswith("_image") else row["id"]
            listed.add(ident)
            _import_image(session, o, root, ident, row, studies, files)
            session.advance()
        for ident in sorted(set(files) - listed):
            session.ledger.skip("image without annotation", files[ident][0].relative_to(root).as_posix())
    return session.result


def _import_image(session, o: SiimOptions, root: Path, ident: str, row, studies, files) -> None:
    study = row["StudyInstanceUID"]
    if study not in studies:
        session.ledger.skip("study missing from train_study_level.csv", ident)
        return
    if studies[study] is None:
        session.ledger.skip("study label is not one-hot", f"{ident} (study {study})")
        return
    path = next((p for p in files.get(ident, ()) if p.parent.parent.name == study), None)
    if path is None:
        session.ledger.skip("image file missing (train/<study>/<series>/<image>.dcm)", ident)
        return
    try:
        boxes = parse_boxes(row["boxes"])
    except RowError as exc:
        session.ledger.skip("unreadable boxes cell", f"{ident}: {exc}")
        return
    add_dicom_row(session, o, root, ident, path, studies[study], boxes, group=study, extra={})
