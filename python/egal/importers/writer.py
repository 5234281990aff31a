"""Writing a pool row by row, in bounded memory, without ever leaving a half-written file.

Rows are buffered and written as one Parquet row group every `flush_rows` rows or `flush_bytes`
bytes of image and mask data, whichever comes first, so an import holds one row group at a time
whatever the size of the dataset. Pages are small and image columns plain, as egal's pool reader
needs (egal.pool.writer explains why).

Everything goes to hidden temporary names in the destination folder first: the Parquet file
(`.NAME.tmp-PID-RANDOM`) and, when images or masks are written as files, their folder
(`.STEM_files.tmp-PID-RANDOM/`; egal._atomic.temporary_path names both). `commit()` closes the
file, moves the files folder into place, checks the result with egal.pool.open_pool (the same
checks `egal score` runs), and only then renames the Parquet file to its destination. An exception,
Ctrl-C or SIGTERM before that removes the temporary names and puts back what was replaced (a SIGKILL
leaves them hidden beside the destination, never at it, and the next run writing that destination
removes them: left_by_killed_runs).

A pool whose files are a folder is never at --out with files it was not written with: with --overwrite, the
previous pool is set aside (a hidden name, egal._atomic.set_aside_path) before the folders are swapped, and
the new pool comes in last. A SIGKILL in between leaves no pool at --out, and the previous pool and its files
whole under their set-aside names, which the next run names, with how to get them back.

The destination is held (claim_destination) from its checks to that rename: locked against a second egal
writing it (refused at once), and published by egal._atomic's rules: a new pool never replaces a file that
appeared at --out meanwhile, and --overwrite replaces only the pool that was there when it was checked.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .._atomic import (
    DestinationError,
    OutputLock,
    is_set_aside,
    keep_mode_of,
    publish,
    remove_stale_temporaries,
    remove_temporary,
    rename_no_replace,
    set_aside,
    temporary_path,
)
from .._disk import name_output
from .._paths import (
    check_new_file,
    check_not_an_input,
    check_replaceable,
    check_utf8_name,
    is_pool_file,
    parquet_name_problem,
    sidecar_path,
)
from ..errors import EgalError
from ..pool.labels import LABEL_COLUMN
from ..pool.schema import GROUP_COLUMN
from ..pool.writer import ROW_GROUP_ROWS, ROWS_PER_PAGE
from .errors import SourceError

# A row group is flushed at this many bytes of binary data even before ROW_GROUP_ROWS rows: a
# VinDr-CXR DICOM is 5-30 MB, and 256 of them would be several GB in memory.
FLUSH_BYTES = 64 << 20
# In a pool's STEM_files/ folder: only a folder holding it is replaced by --overwrite.
FILES_MARKER = ".egal-pool-files"

BOXES_TYPE = pa.list_(pa.list_(pa.float64()))
IMAGE_FIELDS = {"bytes": pa.field("image", pa.binary()), "paths": pa.field("image_path", pa.string())}
ROI_FIELDS = {
    "mask": pa.field("mask", pa.binary()),
    "mask_path": pa.field("mask_path", pa.string()),
    "boxes": pa.field("boxes", BOXES_TYPE),
}


def pool_schema(images_as: str, roi: str | None, extra: list[pa.Field] = ()) -> pa.Schema:
    """id, image or image_path, the ROI column (mask, mask_path, boxes or none), label, group, then `extra`.

    images_as: "bytes" or "paths"; roi: "mask" (written as mask_path when images_as is "paths"),
    "boxes" or None.
    """
    fields = [pa.field("id", pa.string(), nullable=False), IMAGE_FIELDS[images_as]]
    if roi == "mask":
        fields.append(ROI_FIELDS["mask_path" if images_as == "paths" else "mask"])
    elif roi == "boxes":
        fields.append(ROI_FIELDS["boxes"])
    elif roi is not None:
        raise ValueError(f"roi must be 'mask', 'boxes' or None, got {roi!r}")
    fields += [pa.field(LABEL_COLUMN, pa.string()), pa.field(GROUP_COLUMN, pa.string()), *extra]
    return pa.schema(fields)


def check_destination(out, overwrite: bool, what: str = "--out", inputs: dict | None = None) -> Path:
    """The destination as a Path; SourceError when its folder is missing, it is a folder, a symbolic link or one of
    `inputs` ({argument: path}), or it exists without overwrite."""
    path = os.path.expanduser(os.fspath(out))
    if os.path.islink(path):  # the rename would replace the link by the pool, and leave what it leads to as it was
        raise SourceError(f"{what} {path!r} is a symbolic link: name the file itself ({os.path.realpath(path)!r})")
    try:
        check_utf8_name(path, what)
        check_not_an_input(path, what, inputs or {})
        # before "pass --overwrite": a file that --overwrite would not replace either is named as such at once
        check_replaceable(path, what, is_pool_file, "an egal pool (a Parquet file with id and image or image_path "
                          "columns)")
        check_new_file(path, what, replace=overwrite)
    except EgalError as exc:
        raise SourceError(str(exc)) from None
    problem = parquet_name_problem(path)
    if problem:
        raise SourceError(f"{what} is where the pool goes, as Parquet: {problem}")
    return Path(path)


@dataclass
class Claim:
    """A destination this run holds (hold), until release(): `with claim_destination(...) as claim:`."""

    out: Path
    replace: bool  # out existed when checked under the lock, and overwrite lets this run replace it
    lock: OutputLock
    what: str = "--out"
    refuse: Callable[[str], Exception] = SourceError  # the error of a refusal, from its message
    keep_mode: bool = True  # a replaced output's permissions go to its replacement (egal._atomic.publish)
    # What a run killed while replacing out set aside (the previous pool, its files), which overwrite replaces too.
    previous: list[str] = field(default_factory=list)

    def publish(self, tmp) -> None:
        """Renames the complete temporary `tmp` to out (egal._atomic.publish: a new output never replaces anything),
        then deletes `previous`, replaced with it."""
        try:
            publish(tmp, self.out, replace=self.replace, what=self.what, keep_mode=self.keep_mode)
        except DestinationError as exc:
            raise self.refuse(str(exc)) from None
        for old in self.previous:
            remove_temporary(old)

    def release(self) -> None:
        self.lock.release()

    def name_disk_error(self, exc: BaseException | None) -> None:
        """Raises, for a disk error (egal._disk) that stopped this run once it has removed what it wrote, the same
        error naming out and what out holds now: what it held before (a failed run never replaces it) or nothing.
        Any other error, or one already named (a nested claim's), is left to go on as it is."""
        kept = ("nothing was replaced, it holds what it held before" if os.path.lexists(self.out)
                else "nothing was written there")
        named = name_output(exc, self.what, self.out, kept)
        if named is not None:
            raise named from exc

    @contextlib.contextmanager
    def naming_disk_errors(self):
        """`with claim.naming_disk_errors():` around the writing of out, which removes what it wrote when it fails:
        a disk error from it names out (name_disk_error)."""
        try:
            yield
        except OSError as exc:
            self.name_disk_error(exc)
            raise

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def hold(check: Callable[[], Path], overwrite: bool, what: str, refuse=SourceError, keep_mode: bool = True) -> Claim:
    """The destination that `check()` checks and returns, locked for this run (another egal writing it is refused)
    and checked again under the lock: an output another run finished meanwhile is refused as any existing one."""
    path = check()  # the path's own problems first, before a lock file is made beside it
    try:
        lock = OutputLock(path, what)
    except DestinationError as exc:
        raise refuse(str(exc)) from None
    try:
        check()
    except BaseException:
        lock.release()
        raise
    return Claim(path, overwrite and path.exists(), lock, what, refuse, keep_mode)


def claim_destination(out, overwrite: bool, what: str = "--out", inputs: dict | None = None) -> Claim:
    """The pool destination `out`, checked (check_destination) and held for this run (hold), with what killed runs
    left beside it cleared (left_by_killed_runs)."""
    claim = hold(lambda: check_destination(out, overwrite, what, inputs), overwrite, what)
    try:
        claim.previous = left_by_killed_runs(claim.out, overwrite, what)
    except BaseException:
        claim.release()
        raise
    return claim


def files_folder_of(out: Path) -> Path:
    """STEM_files/ beside the pool `out`: where an import writes its images when they are files."""
    return out.parent / sidecar_path(out.name, "_files")


def left_by_killed_runs(out: Path, overwrite: bool, what: str = "--out", held: str = "pool",
                        destinations=None) -> list[str]:
    """Removes the temporary copies that killed runs left of `out` and of the other `destinations` written with it
    (default: the pool `out` and its files folder; egal._atomic.remove_stale_temporaries), and returns what a run
    killed while replacing `out` had set aside: the previous `held` (a pool and its files, an export), whose only
    copy that is while `out` is missing. Without overwrite they are refused, named with how to get them back; with it
    they are what this run replaces (the caller deletes them once its output is in place: Claim.publish)."""
    missing = not out.exists()
    destinations = (out, files_folder_of(out)) if destinations is None else destinations
    kept = [(copy, destination) for destination in destinations
            for copy in remove_stale_temporaries(destination, keep=lambda copy: missing and is_set_aside(copy))]
    if kept and not overwrite:
        back = " and ".join(f"{os.path.basename(c)!r} back to {d.name!r}"
                         + (" (in place of the one there now, which the killed run wrote)" if d.exists() else "")
                         for c, d in kept)
        raise SourceError(f"{what} {str(out)!r} is missing: a run was killed while replacing it, and the {held} it "
                          f"held is kept beside it. To keep that {held}, rename {back}; to replace it, run again with "
                          "overwrite=True (--overwrite). Nothing was written")
    return [copy for copy, _ in kept]


class StreamingPoolWriter:
    """with StreamingPoolWriter(out, schema) as w: w.add(row) ...; the pool appears at `out` on a clean exit.

    files_folder: images or masks are written as files (write_file), into STEM_files/ beside `out`, marked
                  as egal's (FILES_MARKER): --overwrite replaces such a folder, never any other.
    """

    def __init__(self, out, schema: pa.Schema, *, overwrite: bool = False, files_folder: bool = False,
                 flush_rows: int = ROW_GROUP_ROWS, flush_bytes: int = FLUSH_BYTES, inputs: dict | None = None):
        """inputs: {argument: path} of what the import reads, which `out` must not be (--overwrite or not)."""
        self._claim = claim_destination(out, overwrite, inputs=inputs)
        try:
            self._prepare(schema, overwrite, files_folder, flush_rows, flush_bytes)
        except BaseException:
            self._claim.release()
            raise

    def _prepare(self, schema, overwrite, files_folder, flush_rows, flush_bytes) -> None:
        self.out = self._claim.out
        self.schema = schema
        self.flush_rows, self.flush_bytes = flush_rows, flush_bytes
        self.folder = self.out.parent
        self.tmp = Path(temporary_path(self.out, hidden=True))
        self.files_dir = files_folder_of(self.out)
        self.files_name = self.files_dir.name
        self.files_tmp = Path(temporary_path(self.files_dir, hidden=True)) if files_folder else None
        if files_folder and self.files_dir.exists():
            if not overwrite:
                raise SourceError(f"{str(self.files_dir)!r} already exists (the image files of an earlier import): "
                                  "pass overwrite=True (--overwrite) to replace it with the pool")
            if not (self.files_dir / FILES_MARKER).is_file():  # the source dataset itself, say: never deleted
                raise SourceError(f"{str(self.files_dir)!r} is where this pool's image files go, and it exists but "
                                  f"was not written by an egal import (it has no {FILES_MARKER}): egal does not "
                                  "replace it, even with --overwrite; move it away, or choose another --out")
        self.rows = 0
        self._buffer: list[dict] = []
        self._buffered_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._done = False
        self._files_moved = False
        self._old_pool: str | None = None  # the previous pool and files, set aside while the new ones go in
        self._old_files: str | None = None

    def __enter__(self) -> StreamingPoolWriter:
        strings = [f.name for f in self.schema if pa.types.is_string(f.type) and f.name != "id"]
        self._writer = pq.ParquetWriter(str(self.tmp), self.schema, use_dictionary=strings,
                                        write_batch_size=ROWS_PER_PAGE)
        if self.files_tmp is not None:
            self.files_tmp.mkdir()
            (self.files_tmp / FILES_MARKER).write_text(f"image files of the pool {self.out.name}, written by an egal "
                                                      "import; --overwrite replaces this folder with the pool\n")
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort(exc)

    @property
    def rows_added(self) -> int:
        """Rows written so far plus rows waiting in the buffer."""
        return self.rows + len(self._buffer)

    def add(self, row: dict) -> None:
        self._buffer.append(row)
        self._buffered_bytes += sum(len(v) for v in row.values() if isinstance(v, (bytes, bytearray)))
        if len(self._buffer) >= self.flush_rows or self._buffered_bytes >= self.flush_bytes:
            self._flush()

    def write_file(self, relative: str, data: bytes) -> str:
        """Writes `data` under the files folder; returns the path to store in the pool (relative to `out`'s folder)."""
        if self.files_tmp is None:
            raise RuntimeError("this writer was made without files_folder=True")
        target = self.files_tmp / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return f"{self.files_name}/{relative}"

    def reference(self, path) -> str:
        """An existing file as a pool path: relative to `out`'s folder, which must contain it (the pool
        format refuses paths that leave their Parquet file's folder)."""
        real = Path(os.path.realpath(path))
        base = Path(os.path.realpath(self.folder))
        try:
            return real.relative_to(base).as_posix()
        except ValueError:
            linked = os.path.abspath(path).startswith(os.path.abspath(self.folder) + os.sep)
            where = (f"{str(path)!r} leads through a symbolic link to {str(real)!r}, outside {str(base)!r}: use "
                     "images_as='bytes' (--images-as bytes)") if linked else (
                f"{str(path)!r} is not inside {str(base)!r}: write --out into the dataset folder (e.g. "
                "DIR/pool.parquet), or use images_as='bytes' (--images-as bytes)")
            raise SourceError(f"images_as='paths' (--images-as paths) keeps the images where they are, and a pool's "
                              f"paths must stay inside the folder of its Parquet file, but {where}") from None

    def _flush(self) -> None:
        if not self._buffer:
            return
        self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self.schema))
        self.rows += len(self._buffer)
        self._buffer, self._buffered_bytes = [], 0

    def commit(self) -> Path:
        if self._done:
            return self.out
        try:
            self._flush()
            self._writer.close()
            self._writer = None
            if self.rows == 0:
                raise SourceError("no row could be imported, so no pool was written")
            self._put_in_place()
        except BaseException as exc:
            self.abort(exc)
            raise
        self._done = True
        for replaced in (self._old_files, self._old_pool):
            if replaced is not None:
                remove_temporary(replaced)
        self._claim.release()
        return self.out

    def _put_in_place(self) -> None:
        from ..pool import open_pool

        if self.files_tmp is not None:
            # The previous pool goes aside before its files do, and comes back after them (_undo): at no moment
            # is there a pool at out that refers to files it was not written with.
            keep_mode_of(self.out, self.tmp)
            keep_mode_of(self.files_dir, self.files_tmp)
            self._old_pool = set_aside(self.out)
            self._claim.replace = False  # out is free now: what appears there meanwhile is not this run's to replace
            self._old_files = set_aside(self.files_dir)
            rename_no_replace(self.files_tmp, self.files_dir)
            self.files_tmp = None
            self._files_moved = True
        open_pool(self.tmp)  # the checks egal score runs: ids, columns, paths (long on a large pool)
        self._claim.publish(self.tmp)

    def abort(self, exc: BaseException | None = None) -> None:
        """Removes every temporary name; the destination keeps what it had. exc: the error that stopped the run,
        raised again naming the pool when it is a disk error (Claim.name_disk_error)."""
        if self._done:
            return
        self._done = True
        try:
            self._undo()
        finally:
            self._claim.release()
        self._claim.name_disk_error(exc)

    def _undo(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # already failing: removing the file is what matters
                pass
            self._writer = None
        self.tmp.unlink(missing_ok=True)
        if self.files_tmp is not None:
            shutil.rmtree(self.files_tmp, ignore_errors=True)
        if self._files_moved:  # this run's, moved in under its lock
            shutil.rmtree(self.files_dir, ignore_errors=True)
        if self._old_files is not None:
            os.rename(self._old_files, self.files_dir)
        if self._old_pool is not None:
            rename_no_replace(self._old_pool, self.out)
