"""`egal pool from-folders`: one folder per class, the layout many public sets use.

    DIR/
      glioma/       a.png   a_mask.png   b.png   b_mask.png
      meningioma/   c.png   c_mask.png
      unlabeled/    d.png   d_mask.png      (rows without label)

Images are PNG, JPEG or DICOM (.png .jpg .jpeg .dcm .dicom), in the class folder or below it;
the class is the first folder under DIR, its name read back as export-selection writes a class
that is no valid folder name everywhere (egal.importers.file_names: the folder '%43ON' is the
class 'CON', 'a%3Ab' the class 'a:b'; a name without such %XX codes is the class as it is). A
folder that is a symbolic link to somewhere outside DIR is followed (a class kept on another
disk); one that links within DIR is not, since its images are found, and labelled, where they
are (and a link back up cannot loop). A mask is the PNG named like its image plus
`mask_suffix` ("_mask") in the same folder, or, with `masks`, the PNG at the same relative path
(with or without the suffix) in a parallel folder. An image without mask has no ROI (scored by
entropy alone) and is kept. The id is the file name without its extension (ids="path": the path
under DIR without extension, for sets whose names repeat across folders). Images and masks are
kept byte for byte (bytes) or referenced where they are (paths: `out` must be inside DIR).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .._checks import check_choice
from ..pool.errors import RowError
from ..pool.rois import check_aspect, read_mask_png
from .errors import SourceError
from .file_names import text_of_name
from .imaging import IMAGE_SUFFIXES, checked_header, read_image_file
from .options import check_common, existing_folder
from .session import ImportResult, ImportSession
from .writer import pool_schema

ID_RULES = ("name", "path")
MASK_SUFFIXES = (".png",)


@dataclass(frozen=True)
class FoldersOptions:
    """source: the folder of class folders; out: the pool to write. See the module docstring."""

    source: str
    out: str
    masks: str | None = None
    mask_suffix: str = "_mask"
    unlabeled_folder: str = "unlabeled"
    ids: str = "name"
    images_as: str = "bytes"
    overwrite: bool = False
    progress: bool = True

    def __post_init__(self):
        check_common(self)
        check_choice(self.ids, "ids", ID_RULES)
        if not isinstance(self.mask_suffix, str) or not self.mask_suffix.strip():
            raise SourceError(f"mask_suffix (--mask-suffix) must name the suffix of mask files (like '_mask'), got "
                              f"{self.mask_suffix!r}: with none, every image would be its own mask")


def from_folders(source, out, **options) -> ImportResult:
    """Imports the folders layout (see egal.importers.folders) into a pool at `out`; keyword
    arguments are FoldersOptions' fields."""
    return import_folders(FoldersOptions(str(source), str(out), **options))


def import_folders(o: FoldersOptions) -> ImportResult:
    root = existing_folder(o.source, "the folders layout")
    masks_root = existing_folder(o.masks, "the masks folder (masks)") if o.masks else None
    if masks_root is not None and masks_root.resolve() == root.resolve():
        raise SourceError(f"masks (--masks) {o.masks!r} is the images folder itself: every image would be its own "
                          "mask; give the folder of the masks, or leave --masks out for masks beside their images")
    images, stray_masks, masks_not_png = _list_images(root, masks_root, o.mask_suffix)
    if not images:
        raise SourceError(f"{str(root)!r} holds no image ({', '.join(IMAGE_SUFFIXES)}) in a class folder")
    schema = pool_schema(o.images_as, "mask", [_source_field()])
    with ImportSession(f"folders {root}", o.out, schema, overwrite=o.overwrite, progress=o.progress,
                       total=len(images)) as session:
        for path in stray_masks:
            session.ledger.skip("mask without its image", path.relative_to(root).as_posix())
        for path in masks_not_png:  # its image is kept without ROI, and noted so
            session.ledger.skip("mask not a PNG (a mask must be lossless: PNG only)", path.relative_to(root).as_posix())
        for path in images:
            _import_one(session, o, root, masks_root, path)
            session.advance()
    return session.result


def _source_field():
    import pyarrow as pa

    return pa.field("source_path", pa.string())


def _list_images(root: Path, masks_root: Path | None, suffix: str) -> tuple[list, list, list]:
    """(image files, PNG masks without image, masks of another format), sorted by path under root; masks_root
    is not searched."""
    images, masks = [], []
    skip_dir = os.path.realpath(masks_root) if masks_root else None
    real_root = os.path.realpath(root)
    seen = {real_root}  # a linked folder outside DIR is followed (a class kept elsewhere), each real folder once

    def inside(real, top):
        return real == top or real.startswith(top + os.sep)

    for folder, dirs, files in os.walk(root, followlinks=True):
        kept = []
        for d in sorted(dirs):
            path = os.path.join(folder, d)
            real = os.path.realpath(path)
            if d.startswith(".") or real in seen or (skip_dir and inside(real, skip_dir)):
                continue
            if os.path.islink(path) and inside(real, real_root):
                continue  # a link to a folder of DIR itself: its images are found, and labelled, where they are
            seen.add(real)
            kept.append(d)
        dirs[:] = kept
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            # A FIFO, socket or device named like an image goes with the images, whose reading skips it by name.
            is_mask = path.stem.endswith(suffix) and not _special(path)
            (masks if is_mask else images).append(path)
    image_stems = {(p.parent, p.stem) for p in images}
    not_png = [m for m in masks if m.suffix.lower() not in MASK_SUFFIXES]
    stray = [m for m in masks if m.suffix.lower() in MASK_SUFFIXES and (m.parent, m.stem[: -len(suffix)]) not in
             image_stems]
    return images, stray, not_png


def _special(path: Path) -> bool:
    """A FIFO, socket or device named like an image: reading it could wait forever. (A dangling link is not:
    it is reported as unreadable where it is read.)"""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _find_mask(image: Path, root: Path, masks_root: Path | None, suffix: str) -> Path | None:
    candidates = [image.with_name(image.stem + suffix + ".png")]
    if masks_root is not None:
        relative = image.relative_to(root).with_suffix("")
        candidates += [masks_root / relative.with_name(relative.name + ".png"),
                       masks_root / relative.with_name(relative.name + suffix + ".png")]
    return next((c for c in candidates if c.is_file()), None)


def _import_one(session: ImportSession, o: FoldersOptions, root: Path, masks_root, path: Path) -> None:
    relative = path.relative_to(root)
    where = relative.as_posix()
    if len(relative.parts) < 2:
        session.ledger.skip("image not in a class folder", where)
        return
    label = None if relative.parts[0] == o.unlabeled_folder else text_of_name(relative.parts[0])
    try:
        data = read_image_file(path)
        header = checked_header(data)
    except (OSError, RowError) as exc:
        session.ledger.skip("unreadable image", f"{where}: {exc}")
        return
    mask_path = _find_mask(path, root, masks_root, o.mask_suffix)
    mask, has_roi = None, False
    if mask_path is not None:
        try:
            mask = mask_path.read_bytes()
            pixels = read_mask_png(mask)
            check_aspect(pixels.shape, (header.height, header.width), header.orientation)
            has_roi = bool(pixels.any())
        except (OSError, RowError) as exc:
            session.ledger.skip("mask unreadable or not of its image's shape", f"{where}: {exc}")
            return
    ident = relative.with_suffix("").as_posix() if o.ids == "path" else path.stem
    row = {"id": ident, "label": label, "group": None, "source_path": where}
    if o.images_as == "paths":
        row["image_path"] = session.reference(path)
        row["mask_path"] = session.reference(mask_path) if mask_path is not None else None
    else:
        row["image"], row["mask"] = data, mask
    session.add(row, has_roi=has_roi, where=where,
                notes=["image without mask (kept, no ROI)"] if mask_path is None else [])
