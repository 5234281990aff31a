"""`egal pool from-csv`: any table of image paths, with columns mapped by name.

One row per image, or one row per box (`box_columns`, e.g. "x_min,y_min,x_max,y_max", rows
grouped by id, in order of first appearance; a row with empty box cells adds no box, as a
"No finding" row does). Paths are relative to the table's folder, or absolute. The ROI is a mask
path column, a boxes column (a list per cell: see egal.importers.box_cells), or box columns; boxes
are in the image's own pixel coordinates. Without an id column, the id is the image path
without its extension. Empty label and group cells are null (unlabeled).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from .._checks import bad_argument, check_choice
from ..errors import EgalError
from ..pool.errors import RowError
from ..pool.rois import check_aspect, read_mask_png
from .box_cells import parse_boxes
from .boxes import OUT_OF_IMAGE, fit_boxes, fitted_box_notes
from .imaging import checked_header, read_image_file
from .options import check_common
from .session import ImportResult, ImportSession
from .tables import cell_or_none, read_table_lines
from .writer import pool_schema


@dataclass(frozen=True)
class CsvOptions:
    """source: the CSV table; out: the pool to write; the other fields name the table's columns."""

    source: str
    out: str
    image: str = "image"
    id: str | None = None
    mask: str | None = None
    boxes: str | None = None
    box_columns: str | None = None
    label: str | None = None
    group: str | None = None
    out_of_image: str = "skip"
    images_as: str = "bytes"
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        check_common(self)
        check_choice(self.out_of_image, "out_of_image", OUT_OF_IMAGE)
        given = [name for name in ("mask", "boxes", "box_columns") if getattr(self, name)]
        if len(given) > 1:
            raise bad_argument(EgalError, given[1], f"cannot be combined with {given[0]}: a pool has one ROI column")
        if self.box_columns and len(self.box_column_names) != 4:
            raise bad_argument(EgalError, "box_columns", f"must name 4 columns x0,y0,x1,y1, got {self.box_columns!r}")

    @property
    def box_column_names(self) -> list[str]:
        return [c.strip() for c in (self.box_columns or "").split(",") if c.strip()]

    @property
    def roi(self) -> str | None:
        return "mask" if self.mask else "boxes" if (self.boxes or self.box_columns) else None


def from_csv(source, out, **options) -> ImportResult:
    """Imports the images a CSV table lists (see egal.importers.csv_table) into a pool at `out`; keyword
    arguments are CsvOptions' fields (image, id, mask, boxes, box_columns, label, group, ...)."""
    return import_csv(CsvOptions(str(source), str(out), **options))


def import_csv(o: CsvOptions) -> ImportResult:
    table = Path(o.source).expanduser()
    columns = [c for c in (o.image, o.id, o.mask, o.boxes, o.label, o.group) if c] + o.box_column_names
    rows = read_table_lines(table, columns, "the CSV table")
    images = _group_rows(rows, o)
    extra = [pa.field("source_path", pa.string())]
    with ImportSession(f"table {table}", o.out, pool_schema(o.images_as, o.roi, extra), overwrite=o.overwrite,
                       inputs={"the table (TABLE)": table},
                       progress=o.progress, total=len(images)) as session:
        for ident, entry in images.items():
            _import_one(session, o, table.parent, ident, entry)
            session.advance()
    return session.result


def _group_rows(rows: list[tuple[int, dict[str, str]]], o: CsvOptions) -> dict:
    """{id: {"row": first row, "line": its line, "boxes": [cell values], "conflict": str, "repeats": lines
    repeated exactly, "texts": its lines' cells}} in table order."""
    images: dict[str, dict] = {}
    for line, row in rows:
        # no file named ("", ".", "NA"): no id to derive, skipped as such
        if not o.id and (cell_or_none(row[o.image]) is None or not Path(row[o.image]).name):
            images[("line", line)] = {"row": row, "line": line, "boxes": [], "conflict": "", "no_image": True}
            continue
        if o.id and cell_or_none(row[o.id]) is None:  # each such line its own skip (not one id "" of many lines)
            images[("line", line)] = {"row": row, "line": line, "boxes": [], "conflict": "", "empty_id": True}
            continue
        ident = row[o.id] if o.id else str(Path(row[o.image]).with_suffix("").as_posix())
        entry = images.get(ident)
        text = tuple(row.values())
        if entry is None:
            images[ident] = entry = {"row": row, "line": line, "boxes": [], "conflict": "", "repeats": 0,
                                     "texts": {text}}
        elif text in entry["texts"]:
            entry["repeats"] += 1  # a line of this id again (a concatenated export): nothing to choose between
            continue
        else:
            entry["texts"].add(text)
            if not o.box_columns:
                entry["conflict"] = entry["conflict"] or f"id on lines {entry['line']} and {line}"
            for column in (o.image, o.label, o.group):
                if column and cell_or_none(row[column]) != cell_or_none(entry["row"][column]):
                    entry["conflict"] = entry["conflict"] or (
                        f"lines {entry['line']} and {line} disagree on {column} "
                        f"({entry['row'][column]!r}, {row[column]!r})")
        if o.box_columns:
            cells = [row[c] for c in o.box_column_names]
            if any(cell_or_none(c) is not None for c in cells):
                entry["boxes"].append((line, cells))
    return images


def _import_one(session: ImportSession, o: CsvOptions, base: Path, ident: str, entry: dict) -> None:
    # (lines without an image or an id are keyed by their line number, a tuple no id can equal)
    if entry.get("no_image"):
        session.ledger.skip("no image path", f"line {entry['line']}")
        return
    if entry.get("empty_id"):
        session.ledger.skip("empty id", f"line {entry['line']}")
        return
    row, where = entry["row"], f"line {entry['line']} ({ident})"
    if entry["conflict"]:
        session.ledger.skip("rows of one id disagree (or an id repeats without box columns)",
                            f"{ident}: {entry['conflict']}")
        return
    if not ident:
        session.ledger.skip("empty id", f"line {entry['line']}")
        return
    if cell_or_none(row[o.image]) is None:
        session.ledger.skip("no image path", where)
        return
    image_path = _resolve(base, row[o.image])
    try:
        data = read_image_file(image_path)
        header = checked_header(data)
    except OSError as exc:
        session.ledger.skip("image file missing or unreadable", f"{where}: {exc.strerror or exc}")
        return
    except RowError as exc:
        session.ledger.skip("unreadable image", f"{where}: {exc}")
        return
    out = {"id": ident, "label": cell_or_none(row[o.label]) if o.label else None,
           "group": cell_or_none(row[o.group]) if o.group else None, "source_path": row[o.image]}
    has_roi, notes = False, []
    if o.mask:
        mask_path, mask = None, None
        if cell_or_none(row[o.mask]) is not None:
            mask_path = _resolve(base, row[o.mask])
            try:
                mask = read_image_file(mask_path)
                pixels = read_mask_png(mask)
                check_aspect(pixels.shape, (header.height, header.width), header.orientation)
                has_roi = bool(pixels.any())
            except OSError as exc:
                session.ledger.skip("mask file missing or unreadable", f"{where}: {exc.strerror or exc}")
                return
            except RowError as exc:
                session.ledger.skip("mask unreadable or not of its image's shape", f"{where}: {exc}")
                return
        if o.images_as == "paths":
            out["mask_path"] = session.reference(mask_path) if mask_path is not None else None
        else:
            out["mask"] = mask
    elif o.roi == "boxes":
        try:
            boxes = parse_boxes(row[o.boxes]) if o.boxes else [_box_of(line, cells) for line, cells in entry["boxes"]]
            given = len(boxes)
            boxes, clipped, dropped = fit_boxes(boxes, header.width, header.height, o.out_of_image, header.orientation)
        except RowError as exc:
            session.ledger.skip("box unreadable or outside its image", f"{where}: {exc}")
            return
        notes = fitted_box_notes(given, clipped, dropped)
        out["boxes"], has_roi = boxes, bool(boxes)
    if o.images_as == "paths":
        out["image_path"] = session.reference(image_path)
    else:
        out["image"] = data
    if entry.get("repeats"):
        notes.append("line repeated exactly (the repeat ignored)")
    session.add(out, has_roi=has_roi, where=where, notes=notes)


def _box_of(line: int, cells: list[str]) -> list[float]:
    try:
        return [float(c) for c in cells]
    except ValueError:
        raise RowError(f"line {line}: box cells {cells} are not 4 numbers") from None


def _resolve(base: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path
