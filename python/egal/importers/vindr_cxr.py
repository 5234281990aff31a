"""`egal pool from-vindr-cxr`: VinDr-CXR chest radiographs with the radiologists' boxes.

Layouts (found automatically):
  competition (Kaggle, VinBigData 2020)   DIR/train.csv, DIR/train/<image_id>.dicom
  archive (PhysioNet VinDr-CXR 1.0.0)     DIR/annotations/annotations_train.csv, DIR/train/<image_id>.dicom
                                          (split="test": annotations_test.csv and test/)
The annotation table has one row per (image, radiologist, finding): image_id, rad_id, class_name,
x_min, y_min, x_max, y_max (the competition's adds class_id); "No finding" rows have empty
coordinates. These are the competition's train.csv columns as shipped in torchxrayvision 1.5.7
(torchxrayvision/data/vinbigdata-train.csv.gz). A table without rad_id (the archive's test set,
a consensus of five readers) is read as one reader.

Per image (each training image was read by three radiologists):
  * findings are present by `merge`: union, when at least one reader marked them; agree, when at
    least `agree_readers` readers did. Their ROI boxes are merged the same way (union: every box;
    agree: boxes that readers agree on by IoU >= `agree_iou`, averaged; egal.importers.boxes);
  * the label follows `task`:
      abnormal   "abnormal" when any finding is present, else "normal"; ROI = every finding's boxes
      finding    `finding` (e.g. "Cardiomegaly") when it is present, "No finding" when no finding is
                 present; images with other findings only are skipped; ROI = that finding's boxes
      map        `class_map`, a CSV class_name,label mapping findings (and "No finding") to classes:
                 the image's class is the one class its present findings map to; images whose
                 findings map to several classes, or to none, are skipped; ROI = the boxes of the
                 findings of that class
  * boxes are in the DICOM's pixel coordinates; one outside its image skips the image
    (out_of_image="clip" clips it instead).

Images (images_as):
  png     (default) the DICOM decoded with the pool decoder's rules (rescale, VOI LUT / window,
          MONOCHROME1 inverted), shrunk so that its longer side is at most `max_side` pixels
          (0: full size) and stored as 16-bit PNG; boxes scaled with it
  bytes   the DICOM file itself (the originals are 5-30 MB: 15,000 of them make a ~200 GB pool)
  paths   the DICOM where it is (`out` must be inside DIR)
The group column is the image id (VinDr-CXR publishes no patient id).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from .._checks import bad_argument, check_choice, check_fraction, check_int
from ..errors import EgalError
from ..pool.errors import RowError
from .boxes import MERGE_RULES, OUT_OF_IMAGE, fit_boxes, fitted_box_notes, merge_readers
from .errors import SourceError
from .imaging import checked_header, dicom_to_png, read_image_file, scale_boxes
from .options import check_common, existing_folder
from .session import ImportResult, ImportSession
from .tables import read_table, read_table_lines
from .writer import pool_schema

NO_FINDING = "No finding"
COLUMNS = ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")
TASKS = ("abnormal", "finding", "map")
IMAGES_AS = ("png", "bytes", "paths")
IMAGE_SUFFIXES = (".dicom", ".dcm")


@dataclass(frozen=True)
class VindrOptions:
    """source: the VinDr-CXR folder; out: the pool to write. See the module docstring."""

    source: str
    out: str
    split: str = "train"
    annotations: str | None = None
    task: str = "abnormal"
    finding: str | None = None
    class_map: str | None = None
    merge: str = "union"
    agree_readers: int = 2
    agree_iou: float = 0.4
    out_of_image: str = "skip"
    images_as: str = "png"
    max_side: int = 1024
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        check_common(self, IMAGES_AS)
        check_choice(self.split, "split", ("train", "test"))
        check_choice(self.task, "task", TASKS)
        check_choice(self.merge, "merge", MERGE_RULES)
        check_choice(self.out_of_image, "out_of_image", OUT_OF_IMAGE)
        check_int(self.agree_readers, "agree_readers")
        check_fraction(self.agree_iou, "agree_iou")
        check_int(self.max_side, "max_side", minimum=0)
        if self.task == "finding" and not self.finding:
            raise bad_argument(EgalError, "finding", "must name a finding (e.g. 'Cardiomegaly') with task='finding'")
        if self.task == "map" and not self.class_map:
            raise bad_argument(EgalError, "class_map", "must name a CSV class_name,label with task='map'")


def from_vindr_cxr(source, out, **options) -> ImportResult:
    """Imports VinDr-CXR (see egal.importers.vindr_cxr) into a pool at `out`; keyword arguments are
    VindrOptions' fields (split, task, finding, class_map, merge, images_as, max_side, ...)."""
    return import_vindr_cxr(VindrOptions(str(source), str(out), **options))


def find_layout(root: Path, split: str, annotations: str | None) -> tuple[Path, Path]:
    """(annotation table, image folder) of the competition or archive layout."""
    images = root / split
    if annotations:
        table = Path(annotations).expanduser()
    elif (root / f"{split}.csv").is_file():
        table = root / f"{split}.csv"
    elif (root / "annotations" / f"annotations_{split}.csv").is_file():
        table = root / "annotations" / f"annotations_{split}.csv"
    else:
        raise SourceError(f"{str(root)!r} is neither VinDr-CXR layout: no {split}.csv (competition) and no "
                          f"annotations/annotations_{split}.csv (PhysioNet archive); give the table with annotations=")
    if not images.is_dir():
        raise SourceError(f"the VinDr-CXR image folder {str(images)!r} does not exist")
    return table, images


def read_annotations(table: Path) -> dict[str, dict[str, dict[str, list]]]:
    """{image_id: {class_name: {reader: [box, ...]}}}; a "No finding" row adds the reader with no box."""
    rows = read_table_lines(table, COLUMNS, "the VinDr-CXR annotation table")
    images: dict[str, dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for line, row in rows:
        readers = images[row["image_id"]][row["class_name"]]
        reader = row.get("rad_id") or "consensus"
        coordinates = [row[c] for c in COLUMNS[2:]]
        if row["class_name"] == NO_FINDING or not any(coordinates):
            readers[reader]  # noqa: B018  (the reader said so, without a box)
            continue
        try:
            readers[reader].append(tuple(float(v) for v in coordinates))
        except ValueError:
            raise SourceError(f"{str(table)!r} line {line}: box {coordinates} is not 4 numbers") from None
    return images


def read_class_map(path) -> dict[str, str]:
    rows = read_table(path, ("class_name", "label"), "the class map (class_map)")
    return {row["class_name"]: row["label"] for row in rows if row["class_name"] and row["label"]}


def import_vindr_cxr(o: VindrOptions) -> ImportResult:
    root = existing_folder(o.source, "the VinDr-CXR folder")
    table, image_dir = find_layout(root, o.split, o.annotations)
    annotations = read_annotations(table)
    class_map = read_class_map(o.class_map) if o.task == "map" else None
    if o.task == "finding":
        named = sorted({name for by_class in annotations.values() for name in by_class} - {NO_FINDING})
        if o.finding not in named:
            raise SourceError(f"finding (--finding) {o.finding!r} is not a class_name of {str(table)!r}; its findings "
                              f"are {', '.join(repr(n) for n in named)}")
    files = {}
    for p in sorted(image_dir.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in files:  # which of a.dcm and a.dicom holds the annotated image cannot be told
                raise SourceError(f"{str(image_dir)!r} holds two images for image_id {p.stem!r}: "
                                  f"{files[p.stem].name} and {p.name}; keep one")
            files[p.stem] = p
    stored = "paths" if o.images_as == "paths" else "bytes"
    extra = [pa.field("findings", pa.list_(pa.string())), pa.field("source_path", pa.string())]
    with ImportSession(f"VinDr-CXR {table}", o.out, pool_schema(stored, "boxes", extra), overwrite=o.overwrite,
                       progress=o.progress, total=len(annotations)) as session:
        for image_id in sorted(set(files) - set(annotations)):
            session.ledger.skip("image without annotation", files[image_id].name)
        for image_id, by_class in annotations.items():
            path = files.get(image_id)
            if path is None:
                session.ledger.skip("annotated image missing from the image folder", image_id)
            else:
                _import_image(session, o, root, image_id, path, by_class, class_map)
            session.advance()
    return session.result


def present_findings(by_class: dict[str, dict[str, list]], o: VindrOptions) -> dict[str, list[tuple]]:
    """{finding: merged boxes} for the findings present under the merge rule."""
    need = o.agree_readers if o.merge == "agree" else 1
    present = {}
    for finding, by_reader in by_class.items():
        readers = [r for r, boxes in by_reader.items() if boxes]
        if finding == NO_FINDING or not readers:
            continue
        if set(by_reader) == {"consensus"}:  # no rad_id: one consensus reading, nothing to agree on
            present[finding] = merge_readers({"consensus": by_reader["consensus"]}, "union")
        elif len(readers) >= need:
            present[finding] = merge_readers({r: by_reader[r] for r in readers}, o.merge,
                                             iou_threshold=o.agree_iou, min_readers=need)
    return present


def disputed_findings(by_class: dict[str, dict[str, list]], o: VindrOptions) -> list[str]:
    """The findings that some reader marked but fewer than agree_readers did (merge "agree"): neither present
    nor absent, unless agree_readers readers said "No finding" (then the absence is agreed)."""
    if o.merge != "agree":
        return []
    marking = {r for f, by_reader in by_class.items() if f != NO_FINDING for r, boxes in by_reader.items() if boxes}
    if len(set(by_class.get(NO_FINDING, {})) - marking) >= o.agree_readers:
        return []
    return sorted(f for f, by_reader in by_class.items() if f != NO_FINDING and set(by_reader) != {"consensus"}
                  and 0 < sum(1 for boxes in by_reader.values() if boxes) < o.agree_readers)


def label_and_boxes(present: dict[str, list[tuple]], o: VindrOptions, class_map) -> tuple[str, list]:
    """(label, ROI boxes) under o.task; RowError with the reason the image has no label in this task."""
    if o.task == "abnormal":
        return ("abnormal" if present else "normal"), [b for boxes in present.values() for b in boxes]
    if o.task == "finding":
        if o.finding in present:
            return o.finding, list(present[o.finding])
        if present:
            raise RowError(f"other findings only, not {o.finding!r}")
        return NO_FINDING, []
    classes = {class_map[f] for f in present if f in class_map}
    if not present:
        if NO_FINDING not in class_map:
            raise RowError("no finding, and the class map has no 'No finding' row")
        return class_map[NO_FINDING], []
    if len(classes) != 1:
        raise RowError("findings map to several classes" if classes else "no finding of the class map")
    (label,) = classes
    return label, [b for f, boxes in present.items() if class_map.get(f) == label for b in boxes]


def _import_image(session, o: VindrOptions, root: Path, image_id: str, path: Path, by_class, class_map) -> None:
    present = present_findings(by_class, o)
    try:
        label, boxes = label_and_boxes(present, o, class_map)
    except RowError as exc:
        session.ledger.skip(f"no {o.task} label: {exc}", image_id)
        return
    disputed = disputed_findings(by_class, o)
    if disputed and not present:
        # one reader's finding is not agreement, and not its absence either: the negative label would be a guess
        session.ledger.skip(f"a finding fewer than {o.agree_readers} readers marked, and none they agree on "
                            "(merge agree): not normal either", f"{image_id}: {', '.join(disputed)}")
        return
    notes = ["finding present without boxes the readers agree on"] if any(not b for b in present.values()) else []
    add_dicom_row(session, o, root, image_id, path, label, boxes, group=image_id,
                  extra={"findings": sorted(present)}, notes=notes)


def add_dicom_row(session, o, root: Path, ident: str, path: Path, label, boxes, *, group, extra, notes=()) -> None:
    """One DICOM image with boxes in its pixel coordinates, stored as o.images_as says (VinDr-CXR, SIIM)."""
    row = {"id": ident, "label": label, "group": group, "source_path": path.relative_to(root).as_posix(), **extra}
    try:
        data = read_image_file(path)
        if o.images_as == "png":
            row["image"], size, new_size = dicom_to_png(data, o.max_side)
        else:
            header = checked_header(data)
            size = new_size = (header.width, header.height)
        fitted, clipped, dropped = fit_boxes(boxes, size[0], size[1], o.out_of_image)
    except OSError as exc:
        session.ledger.skip("unreadable image file", f"{ident}: {exc.strerror or exc}")
        return
    except RowError as exc:
        what = "box outside its image" if "outside" in str(exc) else "unreadable DICOM or bad box"
        session.ledger.skip(what, f"{ident}: {exc}")
        return
    row["boxes"] = scale_boxes(fitted, size, new_size)
    if o.images_as == "bytes":
        row["image"] = data
    elif o.images_as == "paths":
        row["image_path"] = session.reference(path)
    session.add(row, has_roi=bool(fitted), where=ident, notes=[*notes, *fitted_box_notes(len(boxes), clipped, dropped)])
