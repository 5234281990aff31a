"""Finding a pool's Parquet files and opening them for streaming reads."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import PoolError

# Read column chunks through a buffered stream, page by page, instead of loading
# (pre-buffering) whole row groups: a pool written as one huge row group must not
# cost its whole size in memory.
READ_BUFFER_BYTES = 4 << 20


def find_parquet_files(path) -> list[Path]:
    """The pool's files, absolute, in read order.

    A file is the pool itself; a directory holds every `*.parquet` below it,
    sorted by path relative to the directory (so the order does not depend on the
    file system's listing order).
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise PoolError(f"pool path {str(root)!r} does not exist")
    root = root.resolve()
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise PoolError(f"pool path {str(root)!r} is neither a file nor a directory")
    files = [p for p in root.rglob("*.parquet") if p.is_file()]
    if not files:
        raise PoolError(f"pool directory {str(root)!r} holds no *.parquet files")
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def open_parquet(path: Path) -> pq.ParquetFile:
    """A ParquetFile for streaming reads; PoolError naming the file when it is not one."""
    try:
        return pq.ParquetFile(str(path), pre_buffer=False, buffer_size=READ_BUFFER_BYTES)
    except (pa.ArrowException, OSError) as exc:
        raise PoolError(f"{str(path)!r} is not a readable Parquet file: {exc}") from exc
