"""Streaming a pool in fixed, deterministic batches of raw (undecoded) rows.

Batch i holds the global rows [i * batch_size, (i + 1) * batch_size) in read order,
whatever the file and row-group boundaries are: pieces of consecutive files are
re-chunked into one batch. So a batch index names the same rows on every run, which
is what resuming an interrupted scoring run relies on.

Starting at `start_batch` skips whole files and whole row groups using the Parquet
metadata alone; only the rows before the start inside the first row group read are
read (never decoded) and dropped. At most about two batches of rows are held at a
time, whatever the size of the pool.

RawBatch holds plain Python values (str, bytes, lists) so that it pickles cheaply
to a decoding worker process.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import pyarrow as pa

from .._checks import check_int
from .errors import PoolError
from .files import open_parquet
from .labels import LABEL_COLUMN

# "label" is optional in the format, null meaning unlabeled: asking for it on a pool
# without the column gives all-None rather than an error.
OPTIONAL_COLUMNS = (LABEL_COLUMN,)


@dataclass
class RawBatch:
    index: int  # batch number (the batch_size it was cut with decides its rows)
    start_row: int  # global row number of the first row
    ids: list[str]
    images: list  # bytes, or relative path strings when image_is_path; None where null
    image_is_path: bool
    rois: list  # PNG bytes ("mask"), relative path ("mask_path"), list of boxes ("boxes"), or None
    roi_kind: str | None  # "mask", "mask_path", "boxes" or None (no ROI column)
    base_dirs: list[str]  # folder of each row's Parquet file (paths are relative to it)
    extra: dict[str, list] = field(default_factory=dict)  # requested extra columns
    rows: list[int] = field(default_factory=list)  # global row numbers (contiguous unless selected)

    def __post_init__(self):
        if not self.rows:
            self.rows = list(range(self.start_row, self.start_row + len(self.ids)))

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, positions: Sequence[int]) -> RawBatch:
        """The rows at `positions` (within this batch), as a batch of their own."""
        pick = lambda values: [values[p] for p in positions]  # noqa: E731
        return replace(
            self,
            ids=pick(self.ids),
            images=pick(self.images),
            rois=pick(self.rois),
            base_dirs=pick(self.base_dirs),
            extra={k: pick(v) for k, v in self.extra.items()},
            rows=pick(self.rows),
        )


class _Pending:
    """Rows read but not yet handed out, as per-column Python lists."""

    def __init__(self, columns: Sequence[str]):
        self.columns = {c: [] for c in columns}
        self.base_dirs: list[str] = []

    def __len__(self) -> int:
        return len(self.base_dirs)

    def append(self, batch: pa.RecordBatch, base_dir: str, present: Sequence[str]) -> None:
        for name, values in self.columns.items():
            values.extend(batch.column(name).to_pylist() if name in present else [None] * batch.num_rows)
        self.base_dirs.extend([base_dir] * batch.num_rows)

    def take(self, n: int) -> dict:
        taken = {name: values[:n] for name, values in self.columns.items()}
        taken["__base_dirs__"] = self.base_dirs[:n]
        for values in self.columns.values():
            del values[:n]
        del self.base_dirs[:n]
        return taken


def iter_raw_batches(spec, batch_size: int, *, start_batch: int = 0, columns: Sequence[str] = ()) -> Iterator[RawBatch]:
    """See the module docstring; `spec` is a PoolSpec."""
    check_int(batch_size, "batch_size")
    check_int(start_batch, "start_batch", minimum=0)
    if isinstance(columns, str):
        raise ValueError(f"columns must be a sequence of column names, got the string {columns!r}")
    extra = list(dict.fromkeys(columns))
    spec.check_columns([c for c in extra if c not in OPTIONAL_COLUMNS], "columns")
    core = ["id", spec.image_column] + ([spec.roi_column] if spec.roi_column else [])
    wanted = list(dict.fromkeys(core + extra))
    present = [c for c in wanted if c in spec.columns]
    return _generate(spec, int(batch_size), int(start_batch), wanted, present, extra)


def _generate(spec, batch_size, start_batch, wanted, present, extra) -> Iterator[RawBatch]:
    start_row = start_batch * batch_size
    pending = _Pending(wanted)
    index = start_batch
    next_row = start_row
    file_start = 0
    for file_index, path in enumerate(spec.files):
        file_rows = spec.file_rows[file_index]
        file_end = file_start + file_rows
        if file_end <= start_row:
            file_start = file_end
            continue
        # Whole row groups before the start are skipped without reading them.
        skip = max(0, start_row - file_start)
        groups = spec.row_group_rows[file_index]
        first_group, skipped = 0, 0
        while first_group < len(groups) and skipped + groups[first_group] <= skip:
            skipped += groups[first_group]
            first_group += 1
        drop = skip - skipped
        base_dir = os.path.dirname(path)
        seen = skipped
        try:
            reader = open_parquet(path).iter_batches(
                batch_size=batch_size, row_groups=list(range(first_group, len(groups))), columns=present
            )
            for piece in reader:
                seen += piece.num_rows
                if drop:
                    if drop >= piece.num_rows:
                        drop -= piece.num_rows
                        continue
                    piece = piece.slice(drop)
                    drop = 0
                pending.append(piece, base_dir, present)
                while len(pending) >= batch_size:
                    yield _make_batch(index, next_row, pending.take(batch_size), spec, extra)
                    index += 1
                    next_row += batch_size
        except (pa.ArrowException, OSError) as exc:
            raise PoolError(f"{path!r}: reading failed: {exc}") from exc
        if seen != file_rows:
            raise PoolError(f"{path!r} changed since the pool was opened ({seen} rows now, {file_rows} then)")
        file_start = file_end
    if len(pending):
        yield _make_batch(index, next_row, pending.take(len(pending)), spec, extra)


def _make_batch(index: int, start_row: int, taken: dict, spec, extra) -> RawBatch:
    roi = spec.roi_column
    n = len(taken["id"])
    return RawBatch(
        index=index,
        start_row=start_row,
        ids=taken["id"],
        images=taken[spec.image_column],
        image_is_path=spec.image_column == "image_path",
        rois=taken[roi] if roi else [None] * n,
        roi_kind=roi,
        base_dirs=taken["__base_dirs__"],
        extra={c: taken[c] for c in extra},
    )
