"""`open_pool`: find, check and describe a pool before any image is decoded."""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa

from .errors import PoolError
from .files import find_parquet_files, open_parquet
from .schema import column_types, merge_column_types, resolve_columns
from .validate import validate_rows

COLUMN_READ_ROWS = 65536  # rows a time when one column is read alone: a few MB of ids or labels


@dataclass(frozen=True)
class PoolSpec:
    """A validated pool: its files, the roles of its columns, and how to stream it.

    files:          absolute paths of the Parquet files, in read order
    num_rows:       rows of all files together
    image_column:   "image" (bytes) or "image_path" (relative path)
    roi_column:     "mask", "mask_path", "boxes", or None when the pool has no ROI
                    column at all (every row then has no ROI; callers may warn)
    columns:        every column name (for asking for extra columns)
    file_rows:      rows per file
    row_group_rows: rows per row group, per file (to skip to a batch without reading)
    file_stats:     (size in bytes, mtime_ns) per file, taken when the pool was opened
    referenced_files: a digest of the image_path / mask_path files' paths, sizes and mtimes ("" for none)
    """

    path: str
    files: tuple[str, ...]
    num_rows: int
    image_column: str
    roi_column: str | None
    columns: tuple[str, ...]
    file_rows: tuple[int, ...]
    row_group_rows: tuple[tuple[int, ...], ...]
    file_stats: tuple[tuple[int, int], ...]
    referenced_files: str = ""  # digest of the image_path / mask_path files' paths, sizes and modification times

    def num_batches(self, batch_size: int) -> int:
        return -(-self.num_rows // batch_size)

    def fingerprint(self) -> dict:
        """JSON-able identity of the pool's content, for checking that a resumed run reads the same pool.

        Cheap: file paths, sizes and modification times as they were at open_pool,
        not a hash of the bytes, for the Parquet files and for the files referenced
        through image_path / mask_path (stat-ed by open_pool's check that they exist).
        """
        return {
            "path": self.path,
            "num_rows": self.num_rows,
            "image_column": self.image_column,
            "roi_column": self.roi_column,
            **({"referenced_files": self.referenced_files} if self.referenced_files else {}),
            "files": [
                {"path": f, "size": size, "mtime_ns": mtime, "rows": rows}
                for f, (size, mtime), rows in zip(self.files, self.file_stats, self.file_rows, strict=True)
            ],
        }

    def check_columns(self, names: Sequence[str], argument: str, *, error: type = PoolError) -> None:
        """Each of `names` must be a column of the pool. The one wording of every option that names columns
        (label, group, exclude, extra columns); `argument` names the option, so a command can name its flag."""
        from .._checks import bad_argument

        missing = [n for n in dict.fromkeys(names) if n not in self.columns]
        if missing:
            what = f"{missing[0]!r} is not a column" if len(missing) == 1 else f"{missing} are not columns"
            raise bad_argument(error, argument, f"{what} of the pool {self.path!r}; it has "
                               f"{', '.join(repr(c) for c in self.columns)}")

    def column_values(self, name: str) -> Iterator:
        """The values of the column `name` as Python objects (None for null), row by row in the pool's read order,
        read from the pool's files for that column alone."""
        for array in self.column_arrays(name):
            yield from array.to_pylist()

    def column_arrays(self, name: str) -> Iterator[pa.Array]:
        """The column `name` as pyarrow arrays of up to COLUMN_READ_ROWS rows, in the pool's read order (each file's
        own type), read from the pool's files for that column alone: column_values without a Python object a cell."""
        for path in self.files:
            for batch in open_parquet(path).iter_batches(columns=[name], batch_size=COLUMN_READ_ROWS):
                yield batch.column(0)

    def iter_batches(self, batch_size: int, *, start_batch: int = 0, columns: Sequence[str] = ()) -> Iterator:
        """RawBatch objects; batch i holds global rows [i*batch_size, (i+1)*batch_size).

        `columns` are extra columns to carry along in RawBatch.extra (for example
        "label" or "cv_fold"). See egal.pool.batches for the details.
        """
        from .batches import iter_raw_batches

        return iter_raw_batches(self, batch_size, start_batch=start_batch, columns=columns)


def open_pool(path) -> PoolSpec:
    """Validates a pool (a Parquet file or a directory of them) and describes it.

    Raises PoolError naming the file, column or first offending rows when the pool
    cannot be used: see the pool format in egal.pool for the rules.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
        raise PoolError(f"the pool must be the path of a Parquet file or a folder of them, got {path!r}")
    files = find_parquet_files(path)
    parquet = [open_parquet(f) for f in files]
    types = column_types(parquet[0].schema_arrow, str(files[0]))
    for f, pf in zip(files[1:], parquet[1:], strict=True):
        merged, difference = merge_column_types(types, column_types(pf.schema_arrow, str(f)))
        if merged is None:
            raise PoolError(f"{str(f)!r} has a different schema from {str(files[0])!r}: {difference}")
        types = merged
    where = str(files[0]) if len(files) == 1 else f"pool {str(os.path.abspath(path))!r}"
    roles = resolve_columns(pa.schema(list(types.items())), where)
    file_names = [str(f) for f in files]
    num_rows, referenced = validate_rows(file_names, parquet, roles)
    if num_rows == 0:
        raise PoolError(f"pool {str(path)!r} has no rows")
    stats = []
    for f in files:
        st = os.stat(f)
        stats.append((st.st_size, st.st_mtime_ns))
    return PoolSpec(
        path=str(os.path.abspath(path)),
        files=tuple(file_names),
        num_rows=num_rows,
        image_column=roles.image_column,
        roi_column=roles.roi_column,
        columns=tuple(parquet[0].schema_arrow.names),
        file_rows=tuple(pf.metadata.num_rows for pf in parquet),
        row_group_rows=tuple(
            tuple(pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)) for pf in parquet
        ),
        file_stats=tuple(stats),
        referenced_files=referenced,
    )

