"""`egal pool export-selection`: the images `egal score --select K` chose, as files for the annotators.

  to="folders"        OUT/<label or unlabeled>/<id>.<png|jpg|dcm> and <id>_mask.png: the folders
                      layout that `from_folders` imports back (images and masks byte for byte;
                      a boxes ROI is written as the mask of its boxes, at the image's size)
                      ids and labels are written as names every system holds (egal.importers.file_names:
                      'scan:1' as 'scan%3A1', the class 'CON' as the folder '%43ON')
  to="label-studio"   OUT/images/<id>.png|jpg, OUT/tasks.json (tasks with the ROI as a prediction)
                      and OUT/label_config.xml (egal.importers.label_studio)
  to="cvat"           OUT/images/<id>.png|jpg and OUT/annotations.xml, CVAT for images 1.1
                      (egal.importers.cvat)

For the labelling tools, images that a browser cannot show (16-bit PNG, DICOM) are written as
8-bit PNG decoded with the pool's own rules (egal.pool.images.read_image). Every target also gets
OUT/selection.csv (rank, id, file, label and the selection's scores). The selection is a CSV
with an `id` column (NAME.selection.csv from egal score); without one, every row is exported.
The folder is written under a temporary name and renamed when complete (_put_in_place: never onto a folder
that appeared meanwhile; --overwrite swaps an earlier export out in one step where the system allows it).
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._atomic import DestinationError, keep_mode_of, publish, remove_temporary, replace_folder, temporary_path
from .._checks import bad_argument, check_bool, check_choice
from .._paths import check_writable
from .._spreadsheet import from_spreadsheet_text, spreadsheet_text
from ..errors import EgalError
from ..pool import open_pool
from ..pool.encode import encode_png
from ..pool.errors import MAX_LISTED_ROWS, PathRefused, RowError
from ..pool.images import read_image
from ..pool.labels import LABEL_COLUMN, check_label_column, is_label, label_key
from ..pool.paths import resolve_inside
from ..pool.rois import check_box, mask_from_boxes, read_mask_png, resize_nearest
from ..progress import Progress
from ..selection.csv_file import READ_COLUMNS, checked_selection_rows
from . import cvat, label_studio, pseudonyms
from .errors import SourceError
from .file_names import check_file_name, check_no_control_character, name_of
from .imaging import read_header, suffix_of
from .tables import pool_ids_of, read_table
from .writer import hold, left_by_killed_runs

TARGETS = ("folders", "label-studio", "cvat")
SCAN_BATCH = 64
LABEL_STUDIO_URL_PREFIX = "/data/local-files/?d="


@dataclass(frozen=True)
class ExportOptions:
    """pool: the pool; out: the folder to write; to: folders | label-studio | cvat; selection: a CSV with
    an id column (None: every row); roi_label: the ROI's name in the tool; url_prefix: Label Studio's
    image URL prefix (local files storage); unlabeled_folder: the folders target's folder for null labels;
    label_column: the pool's column of the labels (the pool format's "label" by default); pseudonym_key: a file
    outside `out` (None: ids as they are): every id in the export is replaced by a random pseudonym, and the
    pseudonym -> id key written there (egal.importers.pseudonyms)."""

    pool: str
    out: str
    to: str = "folders"
    selection: str | None = None
    roi_label: str = "ROI"
    url_prefix: str = LABEL_STUDIO_URL_PREFIX
    unlabeled_folder: str = "unlabeled"
    overwrite: bool = False
    progress: bool = True
    label_column: str = LABEL_COLUMN
    pseudonym_key: str | None = None

    def __post_init__(self):
        check_choice(self.to, "to", TARGETS)
        check_bool(self.overwrite, "overwrite")
        check_bool(self.progress, "progress")
        if self.to == "folders":
            _check_unlabeled_folder(self.unlabeled_folder)


def _check_unlabeled_folder(folder) -> None:
    """from_folders finds the unlabeled rows by this folder's name as it is: it cannot be escaped like a label's."""
    if not isinstance(folder, str) or name_of(folder) != folder or not folder:
        raise bad_argument(SourceError, "unlabeled_folder", f"{folder!r} is not a folder name that every system "
                           "holds as it is (empty, a leading '.', a trailing '.' or space, a Windows device name such "
                           "as CON or aux, or one of % / \\ < > : \" | ? *): choose another")
    check_file_name(folder, "unlabeled_folder")


@dataclass
class ExportResult:
    out: Path
    to: str
    images: int
    files: list[str] = field(default_factory=list)  # the tool's import files written (tasks.json, ...)
    pseudonym_key: Path | None = None  # where the pseudonym -> id key went (None: the ids are in the export)
    left_out_columns: list[str] = field(default_factory=list)  # the selection's columns a pseudonymised export omits

    def summary(self) -> str:
        extra = f" and {', '.join(self.files)}" if self.files else ""
        lines = [f"Wrote {self.images} images to {self.out} ({self.to}){extra}"]
        if self.pseudonym_key is not None:
            lines.append(f"  ids replaced by pseudonyms; the key is {str(self.pseudonym_key)!r}: keep it here, and "
                         "pass it to add-labels (--pseudonym-key) with the labels that come back")
            lines.append("  not touched: the images' pixels (burned-in text), DICOM headers, image metadata")
        if self.left_out_columns:
            lines.append(f"  left out the selection's column(s) {', '.join(self.left_out_columns)}, which may "
                         "identify a patient")
        return "\n".join(lines)


def export_selection(pool, out, **options) -> ExportResult:
    """Writes the selected rows of `pool` for annotation (see egal.importers.selection_export); keyword
    arguments are ExportOptions' fields (to, selection, roi_label, url_prefix, overwrite, progress)."""
    return run_export(ExportOptions(str(pool), str(out), **options))


def read_selection(path) -> dict[str, dict]:
    """{id: its selection row}, in the selection's order; SourceError on a repeated id."""
    rows = checked_selection_rows(
        read_table(path, READ_COLUMNS, "the selection (selection)"), SourceError,
        no_rows=f"the selection {str(path)!r} has a header but no rows: nothing to export",
        repeated=lambda ids: f"the selection {str(path)!r} lists id {ids[0]!r} twice")
    # The id stays as written: pool_ids_of reads it, an exact match first.
    return {row["id"]: {column: cell if column == "id" else from_spreadsheet_text(cell) for column, cell in row.items()}
            for row in rows}


# Written into every export folder, with the sha256 of every file the export wrote: --overwrite replaces a folder
# only when it holds this mark (an earlier export) and nothing else, never a folder of the user's own files, nor an
# export that someone has since added to or edited (an annotator's CSV saved into it, a corrected annotations.xml).
EXPORT_MARK = ".egal-export.json"


# What --out holds when the export starts, which says how the export goes in (_put_in_place).
NEW, EMPTY, EARLIER = "new", "empty", "an earlier export"


def _target_folder(out, pool) -> Path:
    """--out as a Path, refused (SourceError) when it can never be an export's folder: empty, a link, the working
    folder, one above it or the pool's, in a folder that does not exist or takes no files, a file."""
    if not str(out).strip():
        raise SourceError("--out is empty: name the new folder to write the export to")
    out = Path(out).expanduser()
    if out.is_symlink():  # replacing it would replace the link, not the export it leads to
        raise SourceError(f"--out {str(out)!r} is a symbolic link: name the folder itself "
                          f"({str(out.resolve())!r})")
    where, here = out.resolve(), Path.cwd().resolve()
    pool_path = Path(pool).expanduser().resolve()
    if where == here or where in here.parents or where == pool_path or where in pool_path.parents:
        raise SourceError(f"--out {str(out)!r} is the working folder, a folder above it, or one that holds the pool: "
                          "export into a folder of its own")
    if not out.parent.is_dir():
        raise SourceError(f"--out {str(out)!r}: its folder {str(out.parent)!r} does not exist")
    if out.exists() and not out.is_dir():
        raise SourceError(f"--out {str(out)!r} is a file, not a folder")
    try:  # the export is made beside `out`, then renamed: said now, not as an OS error after the work
        check_writable(out, "out (--out)")
    except EgalError as exc:
        raise SourceError(str(exc)) from None
    return out


def _what_is_at(out: Path, overwrite: bool) -> str:
    """NEW, EMPTY, or EARLIER: an export that overwrite replaces, holding nothing but its files as written; anything
    else is refused (SourceError)."""
    if not out.exists():
        return NEW
    if not any(out.iterdir()):
        return EMPTY
    if not (out / EXPORT_MARK).is_file():
        raise SourceError(f"--out {str(out)!r} holds files that egal did not export, which --overwrite never "
                          "deletes: choose a new or empty folder")
    if not overwrite:
        raise SourceError(f"--out {str(out)!r} holds an earlier export: pass overwrite=True (--overwrite) to "
                          "replace it")
    _check_only_the_export(out)
    return EARLIER


def _put_in_place(tmp: Path, out: Path, was: str) -> str | None:
    """Renames the complete export `tmp` to `out`, replacing only what `out` held when checked (`was`), and returns
    where the export it replaced is now (for the caller to delete), if any.
    NEW: nothing is replaced: a folder that appeared at `out` meanwhile, even an empty one, is kept and this refused.
    EMPTY: the folder is removed first, only while it is still empty (files written into it meanwhile are kept).
    EARLIER: checked again (an annotator may have saved a file into it meanwhile), then swapped with the new one,
    in one step where the system allows it (egal._atomic.replace_folder)."""
    if was == EARLIER:
        _check_only_the_export(out)
        return replace_folder(tmp, out)
    if was == EMPTY:
        keep_mode_of(out, tmp)
        try:
            os.rmdir(out)
        except FileNotFoundError:  # removed meanwhile: what is there now is published as new
            pass
        except OSError:
            raise SourceError(f"--out {str(out)!r} is no longer empty: files were written into it while this run "
                              "wrote the export; they are kept, and nothing was written") from None
    try:
        publish(tmp, out, replace=False, what="--out")
    except DestinationError as exc:
        raise SourceError(str(exc)) from None
    return None


def _files_of(folder: Path) -> dict[str, str]:
    """{path relative to folder (posix): sha256} of every file below folder but the mark."""
    import hashlib

    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name != EXPORT_MARK:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            found[path.relative_to(folder).as_posix()] = digest.hexdigest()
        elif path.is_symlink():
            found[path.relative_to(folder).as_posix()] = "a symbolic link"
    return found


def _check_only_the_export(out: Path) -> None:
    """--overwrite deletes the folder: only when every file in it is one the export wrote, unchanged."""
    try:
        written = json.loads((out / EXPORT_MARK).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        written = None
    if not isinstance(written, dict):
        raise SourceError(f"--out {str(out)!r} holds an export by an older egal, which did not list the files it "
                          "wrote, so --overwrite cannot tell them from files added since: delete the folder "
                          "yourself, or export to a new one")
    changed = [name for name, digest in _files_of(out).items() if written.get(name) != digest]
    if changed:
        shown = ", ".join(map(repr, changed[:MAX_LISTED_ROWS]))
        more = f" and {len(changed) - MAX_LISTED_ROWS} more" if len(changed) > MAX_LISTED_ROWS else ""
        raise SourceError(f"--out {str(out)!r} holds an earlier export with {len(changed)} file(s) added or changed "
                          f"since ({shown}{more}), which --overwrite never deletes: move them out, or export to a new "
                          "folder")


def run_export(o: ExportOptions) -> ExportResult:
    """The export (see the module's docstring), --out held from its checks to its rename (importers.writer.hold:
    another egal writing it is refused), with what killed runs left beside it cleared first."""
    with hold(lambda: _target_folder(o.out, o.pool), o.overwrite, "--out") as claim, claim.naming_disk_errors():
        out = claim.out
        replaced = left_by_killed_runs(out, o.overwrite, held="export", destinations=(out,))
        for copy in replaced:  # the export a killed run set aside, which overwrite replaces as it would at --out
            _check_only_the_export(Path(copy))
        was = _what_is_at(out, o.overwrite)
        if o.pseudonym_key is None:
            return _export(o, out, was, replaced, None)
        with pseudonyms.claim_key_path(o.pseudonym_key, out, o.overwrite, lambda: _ids_of_export(out)) as key_claim:
            return _export(o, out, was, replaced, key_claim)


def _export(o: ExportOptions, out: Path, was: str, replaced: list[str], key_claim) -> ExportResult:
    """The export into `out`, which held `was` (_what_is_at), replacing the set-aside exports `replaced` too, with
    the key held (key_claim, importers.writer.Claim) when ids are pseudonymised."""
    key = key_claim.out if key_claim is not None else None
    spec = open_pool(o.pool)
    check_label_column(spec, o.label_column)
    chosen = read_selection(o.selection) if o.selection else None
    if chosen:
        in_pool = pool_ids_of(spec, chosen)
        chosen = {in_pool.get(ident, ident): row for ident, row in chosen.items()}
    left_out = []
    if chosen and key is not None:  # only egal score's own columns: a group column is a patient's id
        left_out = [c for c in next(iter(chosen.values())) if c not in (*pseudonyms.KEPT_SELECTION_COLUMNS, "id")]
        chosen = {ident: {c: v for c, v in row.items() if c in pseudonyms.KEPT_SELECTION_COLUMNS}
                  for ident, row in chosen.items()}
    tmp = Path(temporary_path(out, hidden=True))
    tmp.mkdir()
    key_tmp = exported = None
    try:
        writer = _Writer(o, tmp, spec.roi_column, pseudonyms.Pseudonyms() if key is not None else None)
        progress = Progress(spec.num_rows, enabled=o.progress, desc="exporting", unit="rows")
        try:
            for batch in spec.iter_batches(SCAN_BATCH, columns=[o.label_column]):
                for i, ident in enumerate(batch.ids):
                    label = batch.extra[o.label_column][i]
                    writer.classes.add(label_key(label))
                    if chosen is None or ident in chosen:
                        writer.add(ident, label, batch, i, (chosen or {}).get(ident, {}))
                progress.advance(len(batch))
        finally:
            progress.close()
        missing = [i for i in (chosen or {}) if i not in writer.written]
        if missing:
            shown = ", ".join(map(repr, missing[:MAX_LISTED_ROWS]))
            more = f" and {len(missing) - MAX_LISTED_ROWS} more" if len(missing) > MAX_LISTED_ROWS else ""
            raise SourceError(f"{len(missing)} id(s) of the selection are not in the pool {o.pool!r}: {shown}{more} "
                              "(a selection from another pool?)")
        files = writer.finish(chosen)
        # The mark names the pool (a path, which can name a patient's folder) only where ids may show.
        mark = {"written_by": "egal pool export-selection", "to": o.to,
                **({"pseudonymised": True} if key is not None else {"pool": str(o.pool)}),
                "rows": len(writer.written), "files": _files_of(tmp)}
        (tmp / EXPORT_MARK).write_text(json.dumps(mark))
        if key is not None:  # written in full before the export is in place; renamed onto `key` right after it
            with key_claim.naming_disk_errors():  # (the export is not in place either)
                key_tmp = pseudonyms.write_key(key, writer.key_pairs())
        swapped_out = _put_in_place(tmp, out, was)
        exported = out
        for old in [*replaced, *([swapped_out] if swapped_out else [])]:  # what the export in place replaced
            remove_temporary(old)
        if key_tmp is not None:
            key_claim.publish(key_tmp)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # the new export, or once swapped in, the one it replaced
        if key_tmp is not None and exported is not None and key_tmp.exists():
            # The export is in place: its key must not be lost with the error (nor replace a key that appeared).
            raise SourceError(f"the export {str(out)!r} is written, but its pseudonym key could not be moved into "
                              f"place ({exc}): it is {str(key_tmp)!r}, the only key of that export; move it to "
                              f"{str(key)!r}, or to a new name if that is another export's key") from None
        if key_tmp is not None:
            key_tmp.unlink(missing_ok=True)
        raise
    return ExportResult(out, o.to, len(writer.written), files, key, left_out)


def _ids_of_export(out: Path) -> set[str]:
    """The ids (or pseudonyms) in the selection.csv of the export at `out`; none when it holds no export."""
    if not (out / "selection.csv").is_file():
        return set()
    return {row["id"] for row in read_table(out / "selection.csv", READ_COLUMNS, "the earlier export's selection")}


class _Writer:
    """Writes each exported row's files as it streams by; keeps only the small facts the import file needs."""

    def __init__(self, o: ExportOptions, folder: Path, roi_kind: str | None, names=None):
        self.o, self.folder, self.roi_kind = o, folder, ("mask" if roi_kind in ("mask", "mask_path") else roi_kind)
        # An id as the export shows it: the id itself, or its pseudonym (names: egal.importers.pseudonyms.Pseudonyms).
        self.pseudonyms = names
        self.shown = names if names is not None else (lambda ident: ident)
        self.order: list[str] = []  # the ids in the order of selection.csv (finish)
        self.written: dict[str, dict] = {}
        self.shapes: dict[str, tuple] = {}  # id -> (width, height, boxes, full-size mask) for the tools' files
        self.classes: set = set()
        self.files: dict[str, str] = {}  # file written (relative to the folder) -> the id it belongs to
        self.label_folders: dict[str, str] = {}  # the folders target's label folder, casefolded -> its label

    def _claim(self, name: str, ident: str) -> Path:
        """The path of `name`, which no other row's file may have taken: pool ids 'x' and 'x_mask' would both
        write x_mask.png, and one would silently replace the other."""
        key = name.casefold()  # the same file on a case-insensitive file system
        if key in self.files:
            raise SourceError(f"ids {self.files[key]!r} and {ident!r} would both write {name!r} in the export: "
                              "rename one of them in the pool (an id ending in _mask collides with a mask)")
        self.files[key] = ident
        return self.folder / name

    def add(self, ident: str, label, batch, i: int, selected: dict) -> None:
        stem = name_of(self.shown(ident))
        check_file_name(stem)
        if label_key(label) is not None:  # a tag in CVAT's XML, a choice in Label Studio's, a folder's name
            check_no_control_character(label_key(label), "label")
        data = _read(batch.images[i], batch.image_is_path, batch.base_dirs[i], ident, "image")
        roi = batch.rois[i]
        mask_bytes = None
        if roi is not None and batch.roi_kind in ("mask", "mask_path"):
            mask_bytes = _read(roi, batch.roi_kind == "mask_path", batch.base_dirs[i], ident, "mask")
        try:
            header = read_header(data)
            boxes = [list(check_box(k, b, header.width, header.height, header.orientation))
                     for k, b in enumerate(roi)] if batch.roi_kind == "boxes" and roi else []
            if self.o.to == "folders":
                name = self._folders(ident, stem, label, data, header, mask_bytes, boxes)
            else:
                name = self._tool(ident, stem, data, header, mask_bytes, boxes)
        except RowError as exc:
            raise SourceError(f"row {ident!r} of the pool cannot be exported: {exc}") from None
        # None for a cell that holds no label (null, NaN, ""), whichever file it goes to.
        self.written[ident] = {"file": name, "label": label if is_label(label) else None, **selected}

    def _folders(self, ident, stem, label, data, header, mask_bytes, boxes) -> str:
        folder = self._label_folder(ident, label)
        (self.folder / folder).mkdir(exist_ok=True)
        name = f"{folder}/{stem}{suffix_of(data)}"
        self._claim(name, ident).write_bytes(data)
        if mask_bytes is not None:
            self._claim(f"{folder}/{stem}_mask.png", ident).write_bytes(mask_bytes)
        elif boxes:
            size = (header.height, header.width)
            mask = mask_from_boxes(boxes, size, size) * 255
            self._claim(f"{folder}/{stem}_mask.png", ident).write_bytes(encode_png(mask))
        return name

    def _label_folder(self, ident, label) -> str:
        """The folder of a label's rows: the label written as a name (file_names.name_of, which from_folders reads
        back), or unlabeled_folder for a row without one. Two labels that would share a folder are refused."""
        if label_key(label) is None:
            return self.o.unlabeled_folder
        folder = name_of(label_key(label))
        check_file_name(folder, "label")
        # (casefolded: on a case-insensitive file system, Windows' and macOS's, "Unlabeled" and "unlabeled" are one)
        if folder.casefold() == self.o.unlabeled_folder.casefold():
            raise SourceError(f"row {ident!r} has the label {label_key(label)!r}, the name of the folder of the rows "
                              "without a label: both would go into one folder; pass another unlabeled_folder "
                              "(--unlabeled-folder)")
        other = self.label_folders.setdefault(folder.casefold(), label_key(label))
        if other != label_key(label):
            raise SourceError(f"the labels {other!r} and {label_key(label)!r} would share the folder {folder!r} on a "
                              "case-insensitive file system (Windows', macOS's), and come back as one class: rename "
                              "one in the pool, or export to label-studio or cvat")
        return folder

    def _tool(self, ident, stem, data, header, mask_bytes, boxes) -> str:
        (self.folder / "images").mkdir(exist_ok=True)
        viewable = header.format in ("PNG", "JPEG") and header.bits == 8
        name = f"{stem}{suffix_of(data) if viewable else '.png'}"
        self._claim(f"images/{name}", ident).write_bytes(data if viewable else _as_8bit_png(data))
        mask = None
        if mask_bytes is not None:
            mask = resize_nearest(read_mask_png(mask_bytes), (header.height, header.width)).astype(bool)
        self.shapes[ident] = (header.width, header.height, boxes, mask)
        return f"images/{name}"

    def finish(self, chosen) -> list[str]:
        shapes = self.shapes
        order = self.order = list(chosen) if chosen is not None else list(self.written)
        classes = sorted(c for c in self.classes if c is not None)
        with open(self.folder / "selection.csv", "w", newline="") as f:
            extra = [c for c in (next(iter(chosen.values())) if chosen else {}) if c not in ("id", "file", "label")]
            writer = csv.writer(f)
            writer.writerow(["id", "file", "label", *extra])
            for ident in order:
                row = self.written[ident]
                cells = [self.shown(ident), row["file"], label_key(row["label"]) or "",
                         *(row.get(c, "") for c in extra)]
                writer.writerow([spreadsheet_text(cell) for cell in cells])
        if self.o.to == "label-studio":
            tasks = [self._ls_task(ident, shapes[ident]) for ident in order]
            (self.folder / "tasks.json").write_text(json.dumps(tasks, allow_nan=False))
            (self.folder / "label_config.xml").write_text(label_studio.label_config(classes, self.roi_kind,
                                                                                    self.o.roi_label))
            return ["tasks.json", "label_config.xml"]
        if self.o.to == "cvat":
            lines = cvat.header(len(order), self.o.roi_label, classes)
            for index, ident in enumerate(order):
                width, height, boxes, mask = shapes[ident]
                label = self.written[ident]["label"]
                lines += cvat.image(index, Path(self.written[ident]["file"]).name, width, height, boxes=boxes,
                                    mask=mask, roi_label=self.o.roi_label, tag=None if label is None else str(label))
            (self.folder / "annotations.xml").write_text("\n".join(lines + cvat.footer()))
            return ["annotations.xml"]
        return []

    def key_pairs(self) -> list[tuple[str, str]]:
        """(pseudonym, id) of every row exported, in selection.csv's order."""
        return [(self.pseudonyms.of[ident], ident) for ident in self.order]

    def _ls_task(self, ident: str, shape) -> dict:
        width, height, boxes, mask = shape
        row = self.written[ident]
        results = [label_studio.rectangle(b, width, height, self.o.roi_label, k) for k, b in enumerate(boxes)]
        if mask is not None and mask.any():
            results.append(label_studio.brush(mask, self.o.roi_label))
        data = {"egal_id": self.shown(ident), **{f"egal_{k}": v for k, v in row.items() if k not in ("file", "label")}}
        if row["label"] is not None:
            data["egal_label"] = _json_label(row["label"])
        return label_studio.task(image_url(self.o.url_prefix, row["file"]), data, results)


def image_url(prefix: str, file: str) -> str:
    """Label Studio's URL of an exported image: the file's path percent-encoded ('#', '&', spaces and non-ASCII
    letters would otherwise end or split the query), its slashes kept."""
    return prefix + urllib.parse.quote(file)


def _read(value, is_path: bool, base_dir: str, ident: str, what: str) -> bytes:
    if value is None:
        raise SourceError(f"row {ident!r} has no {what}")
    if not is_path:
        return bytes(value)
    try:
        return Path(resolve_inside(base_dir, value)).read_bytes()
    except (PathRefused, OSError) as exc:
        raise SourceError(f"row {ident!r}: its {what} file cannot be read: {exc}") from None


def _as_8bit_png(data: bytes) -> bytes:
    planes = read_image(data, 3)  # [1 or 3, h, w] in [0, 1], the pool's decoding rules
    pixels = np.round(planes * 255.0).astype(np.uint8)
    return encode_png(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))


def _json_label(label):
    """A label as JSON keeps its type where JSON has one (text, a whole number, a finite number, true or false);
    any other (a date, bytes, an infinite float) goes as its text, as the class egal names it."""
    if isinstance(label, (str, bool, int)) or (isinstance(label, float) and math.isfinite(label)):
        return label
    return label_key(label)
