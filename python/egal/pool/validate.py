"""Row checks that `open_pool` runs before any work: ids and referenced files.

Only the `id` column and the path columns are read, streamed batch by batch, so
validating a pool of a million images reads megabytes, not its images. Image and
ROI *content* is not looked at here: a corrupt PNG is a row error at decode time,
not a reason to refuse the whole pool.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import PathRefused, PoolError, RowCollector
from .paths import resolve_inside
from .schema import PoolColumns

VALIDATION_BATCH_ROWS = 65536


def validate_rows(files: Sequence[str], parquet: Sequence[pq.ParquetFile], columns: PoolColumns) -> tuple[int, str]:
    """Checks ids (non-null, unique across files) and path columns; returns the row count and a digest of the
    referenced files' paths, sizes and modification times ("" without path columns): what they were now, for
    a resumed run to notice an image replaced since, at the cost of the stat this check makes anyway."""
    ids: list[pa.Array] = []
    referenced = hashlib.sha256()
    null_ids = RowCollector()
    bad_paths = {c: RowCollector() for c in columns.path_columns}
    row0 = 0
    for path, pf in zip(files, parquet, strict=True):
        base_dir = os.path.dirname(path)
        read = ["id", *columns.path_columns]
        try:
            for batch in pf.iter_batches(batch_size=VALIDATION_BATCH_ROWS, columns=read):
                id_array = batch.column("id").cast(pa.string())
                ids.append(id_array)
                id_values = None
                if id_array.null_count:
                    for i in pc.indices_nonzero(id_array.is_null()).to_pylist():
                        null_ids.add(row0 + i, None)
                for column in columns.path_columns:
                    values = batch.column(column).to_pylist()
                    if id_values is None:
                        id_values = id_array.to_pylist()
                    _check_paths(values, id_values, base_dir, row0, bad_paths[column], referenced)
                row0 += batch.num_rows
        except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:  # (a path column of bytes that are no text)
            raise PoolError(f"{path!r}: cannot read columns {read}: {exc}") from exc
    if null_ids:
        raise PoolError(f"column 'id' holds nulls: {null_ids.describe()}")
    _check_unique(ids)
    for column, collector in bad_paths.items():
        if collector:
            raise PoolError(f"column {column!r} names files that cannot be read: {collector.describe()}")
    return row0, referenced.hexdigest() if columns.path_columns else ""


def _check_paths(values, id_values, base_dir: str, row0: int, collector: RowCollector, referenced) -> None:
    for i, relative in enumerate(values):
        # A null image_path is a row error at decode time; a null mask_path means "no ROI".
        if relative is None:
            continue
        try:
            stat = os.stat(resolve_inside(base_dir, relative))
        except PathRefused as exc:
            collector.add(row0 + i, id_values[i], str(exc))
            continue
        except OSError as exc:  # gone between the check and the stat
            collector.add(row0 + i, id_values[i], str(exc))
            continue
        referenced.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))


def _check_unique(ids: list[pa.Array]) -> None:
    if not ids:
        return
    all_ids = pa.chunked_array(ids, type=pa.string())
    counts = pc.value_counts(all_ids)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated) == 0:
        return
    values = repeated.field("values")
    rows = pc.indices_nonzero(pc.is_in(all_ids, value_set=values)).to_pylist()
    where: dict = {}
    for row in rows:
        where.setdefault(all_ids[row].as_py(), []).append(row)
    listed = list(where.items())[:5]
    text = "; ".join(f"{ident!r} at rows {', '.join(map(str, rs))}" for ident, rs in listed)
    if len(repeated) > len(listed):
        text += f"; and {len(repeated) - len(listed)} more"
    raise PoolError(f"column 'id' must be unique, {len(repeated)} value(s) repeat: {text}")
