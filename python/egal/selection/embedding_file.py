"""The embeddings file that `egal score --embeddings` writes next to its output, and reading it back.

    scores.parquet              one row per pool row (id, pred, ..., score, rank, status, error)
    scores.embeddings.parquet   one row per pool row, in the same order:
                                  id         string
                                  embedding  fixed_size_list<float32>[D]; null for rows in error

A sidecar, not a column of the scores: the ranked output stays small (a million 512-d
rows are 2 GB of embeddings against about 50 MB of scores) and byte for byte what it
was without --embeddings, and a selection reads only its candidates' rows from it, one
row group at a time, so memory stays bounded by the candidates whatever the pool size.
The file records, in its Parquet metadata, the run that wrote it (key "egal.run", the
same record as the scores file's) and what the vectors are (key "egal.embedding"); a
selection refuses an embeddings file of another run.
"""
from __future__ import annotations

import json
import os

import numpy as np

from .._atomic import keep_mode_of, temporary_path
from .._checks import bad_argument
from .._paths import sidecar_path
from .errors import SelectionError

EMBEDDING_COLUMN = "embedding"
RUN_KEY = b"egal.run"  # the scoring run's manifest, JSON (as in the scores file)
EMBEDDING_KEY = b"egal.embedding"  # what the vectors are, JSON: {"kind": ..., "dim": D}
ROW_GROUP_ROWS = 16384  # rows per row group: what a selection reads at a time (32 MiB at D = 512)


def embeddings_path_for(out: str) -> str:
    """NAME.embeddings.parquet next to NAME.parquet."""
    return sidecar_path(out, ".embeddings.parquet")


def embedding_array(vectors: np.ndarray, valid: np.ndarray):
    """A fixed_size_list<float32>[D] Arrow array of [N, D] vectors, null where `valid` is False."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    flat = pa.array(vectors.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(~np.asarray(valid, dtype=bool)))


def write_embedding_file(path: str, tables, *, run: dict, kind: str) -> int:
    """Write the (id, embedding) columns of `tables` (an iterable of Arrow tables, in pool order) to `path`,
    atomically (a temporary name, then a rename); returns the rows written."""
    import pyarrow.parquet as pq

    tmp = temporary_path(os.path.abspath(path))
    writer, rows = None, 0
    try:
        for table in tables:
            table = table.select(["id", EMBEDDING_COLUMN])
            if writer is None:
                dim = table.schema.field(EMBEDDING_COLUMN).type.list_size
                description = json.dumps({"kind": kind, "dim": dim})
                metadata = {RUN_KEY: json.dumps(run, sort_keys=True), EMBEDDING_KEY: description}
                writer = pq.ParquetWriter(tmp, table.schema.with_metadata(metadata))
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            rows += table.num_rows
        if writer is None:
            raise ValueError("no scored rows to write embeddings for")
        writer.close()
        writer = None
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        keep_mode_of(path, tmp)
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)
    return rows


class EmbeddingFile:
    """An embeddings file, read a row group at a time: `take(positions, ids)` returns the vectors of those
    rows (float32 [len, D]; NaN for a row without one), checking that the file holds those ids there."""

    def __init__(self, path, *, run: dict | None = None):
        """run: the scores file's run record; an embeddings file written by another run is refused."""
        import pyarrow.parquet as pq

        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise bad_argument(SelectionError, "embeddings", f"file {self.path!r} does not exist: score with "
                               "embeddings=True (--embeddings) to write it")
        try:
            self._file = pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            raise bad_argument(SelectionError, "embeddings", f"file {self.path!r} is not a readable Parquet file "
                               f"({exc})") from None
        schema = self._file.schema_arrow
        metadata = schema.metadata or {}
        if EMBEDDING_COLUMN not in schema.names or "id" not in schema.names or EMBEDDING_KEY not in metadata:
            raise bad_argument(SelectionError, "embeddings", f"file {self.path!r} is not an egal embeddings file "
                               "(written by egal score --embeddings): it lacks the id / embedding columns or their "
                               "description")
        self.dim, self.kind, self.run = _description(schema, self.path)
        if run is not None and self.run != run:
            raise bad_argument(SelectionError, "embeddings", f"file {self.path!r} was written by another scoring run "
                               "than the scores (other pool, model or options); score again with embeddings=True "
                               "(--embeddings), or pass the embeddings file of that run")
        counts = [self._file.metadata.row_group(g).num_rows for g in range(self._file.num_row_groups)]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.rows = int(self._starts[-1])

    def take(self, positions: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """[len(positions), D] float32."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((positions.size, self.dim), dtype=np.float32)
        if positions.size and (positions.min() < 0 or positions.max() >= self.rows):
            raise bad_argument(SelectionError, "embeddings", f"file {self.path!r} has {self.rows} rows, fewer than "
                               "the scores")
        group_of = np.searchsorted(self._starts, positions, side="right") - 1
        for group in np.unique(group_of):
            wanted = np.flatnonzero(group_of == group)
            local = positions[wanted] - self._starts[group]
            table = self._file.read_row_group(int(group), columns=["id", EMBEDDING_COLUMN])
            found = np.asarray(table.column("id").take(local).to_pylist(), dtype=object)
            expected = np.asarray(ids, dtype=object)[wanted]
            if not np.array_equal(found.astype(str), expected.astype(str)):
                raise bad_argument(SelectionError, "embeddings", f"file {self.path!r} does not hold the scores' rows "
                                   "in their order (another pool or run); score again with embeddings=True "
                                   "(--embeddings)")
            out[wanted] = vectors_of(table.column(EMBEDDING_COLUMN).take(local), self.dim)
        return out


def _description(schema, path: str) -> tuple[int, str, dict | None]:
    """(D, kind, run record) of an embeddings file, checked against its embedding column's type: a file whose
    description was damaged or edited is refused by name, not read as vectors of another length."""
    import pyarrow as pa

    metadata = schema.metadata
    try:
        info = json.loads(metadata[EMBEDDING_KEY])
        run = json.loads(metadata[RUN_KEY]) if RUN_KEY in metadata else None
        dim, kind = info["dim"], info.get("kind", "")
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # not JSON, not a mapping, no "dim"
        raise bad_argument(SelectionError, "embeddings", f"file {path!r} has a damaged description in its Parquet "
                           f"metadata ({type(exc).__name__}: {exc}); score again with embeddings=True "
                           "(--embeddings)") from None
    column = schema.field(EMBEDDING_COLUMN).type
    if not (pa.types.is_fixed_size_list(column) and pa.types.is_floating(column.value_type)):
        raise bad_argument(SelectionError, "embeddings", f"file {path!r}: its embedding column is {column}, not a "
                           "fixed-size list of floats as egal score --embeddings writes")
    problem = None
    if not isinstance(run, (dict, type(None))):
        problem = f"its run record is {type(run).__name__}, not the record egal score writes"
    elif type(dim) is not int:
        problem = f"its description gives dim {dim!r}, not a whole number"
    elif dim != column.list_size:
        problem = f"it says its vectors have dim {dim}, but its embedding column holds {column.list_size} numbers a row"
    if problem:
        raise bad_argument(SelectionError, "embeddings", f"file {path!r}: {problem}; score again with embeddings=True "
                           "(--embeddings)")
    return dim, str(kind), run


def vectors_of(column, dim: int) -> np.ndarray:
    """[len, D] float32 from a fixed_size_list<float32>[D] Arrow array or chunked array; NaN for null rows."""
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = array.values.slice(array.offset * dim, len(array) * dim)
    vectors = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(array), dim)
    if array.null_count:
        vectors = vectors.copy()
        vectors[array.is_null().to_numpy(zero_copy_only=False)] = np.nan
    return vectors
