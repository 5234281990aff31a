"""A digest of a pool's content (its Parquet bytes, and the image and mask files it names): the identity the
decoded-array cache (egal.loop.data) and an experiment folder (egal.loop.folder) key a pool by. Unlike
PoolSpec.fingerprint, which trusts sizes and modification times, it reads the bytes: a copy of a pool is the same
pool, and a file edited in place is another."""
from __future__ import annotations

import functools
import hashlib
import os

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import PathRefused
from .files import find_parquet_files
from .paths import resolve_inside


def content_digest(path, *, with_files: bool = True) -> str:
    """A digest of a pool's bytes (a folder pool: its Parquet files' names and bytes; a pool whose images or masks
    are files, image_path / mask_path: their bytes too, so that an image edited in place is decoded again): what
    the decoded cache and an experiment folder key a pool by. Each file is read once per process while its size
    and modification time stay the same (both keys ask for it at start-up). with_files=False: the Parquet bytes
    alone, the digest egal recorded before it read the image files (experiment folders made then resume)."""
    if os.path.isdir(path):
        root = os.path.realpath(path)
        digest = hashlib.blake2b(digest_size=12)
        for file in find_parquet_files(root):
            digest.update(f"{os.path.relpath(file, root)}\0{_file_digest(str(file), with_files)}\0".encode())
        return digest.hexdigest()
    return _file_digest(str(find_parquet_files(path)[0]), with_files)  # resolved, as the pool reader opens it


def _file_digest(path: str, with_files: bool) -> str:
    """content_digest of one Parquet file at the path the pool reader has for it (its image paths are relative to
    that path's folder: a folder pool's linked file keeps the folder of the link, a pool given as a link does not)."""
    stat = os.stat(path)
    own = _digest(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    referenced = _referenced_files_digest(path) if with_files else None
    return own if referenced is None else hashlib.blake2b(f"{own}\0{referenced}".encode(), digest_size=12).hexdigest()


_REFERENCED_DIGESTS: dict[str, str] = {}  # what the files' sizes and times were -> their digest, in this process


def _referenced_files_digest(path) -> str | None:
    """A digest of the files a Parquet pool's image_path / mask_path columns name (each value, and its file's
    bytes, or that it cannot be read), wherever the pool lies; None for a pool of image and mask bytes."""
    try:
        schema = pq.read_schema(path)
        text = (pa.string(), pa.large_string())  # a path column of another type is refused by the pool reader
        columns = [c for c in ("image_path", "mask_path") if c in schema.names and schema.field(c).type in text]
        table = pq.read_table(path, columns=columns) if columns else None
        values = {c: table.column(c).to_pylist() for c in columns}
    except (OSError, ValueError, KeyError, pa.ArrowException):  # not a readable pool (bytes that are no text, a
        return None  # name given twice): the pool reader says what is wrong
    if not columns:
        return None
    base = os.path.dirname(path)  # as the decoder resolves them (egal.pool.batches)
    entries = []  # (column, value, file, size, mtime), or (column, value, None, what): null or why unreadable
    for column in columns:
        for value in values[column]:
            if value is None:
                entries.append((column, value, None, "null"))
                continue
            try:
                target = resolve_inside(base, str(value))
                stat = os.stat(target)
                entries.append((column, value, target, stat.st_size, stat.st_mtime_ns))
            except (PathRefused, OSError) as exc:  # decoding will say so for its row; the digest notes the kind
                entries.append((column, value, None, f"unreadable: {type(exc).__name__}"))
    signature = hashlib.blake2b(repr(entries).encode(), digest_size=16).hexdigest()
    if signature not in _REFERENCED_DIGESTS:  # (stat-ing is cheap; the files are read once per process)
        digest = hashlib.blake2b(digest_size=12)
        for column, value, target, *rest in entries:
            content = rest[0]
            if target is not None:
                try:
                    content = _digest.__wrapped__(target, *rest)
                except OSError as exc:  # unreadable after all (permissions), or gone since the stat
                    content = f"unreadable: {type(exc).__name__}"
            digest.update(f"{column}\0{value}\0{content}\0".encode())
        _REFERENCED_DIGESTS[signature] = digest.hexdigest()
    return _REFERENCED_DIGESTS[signature]


@functools.lru_cache(maxsize=4096)  # a folder pool's Parquet files each, and a process reads several pools at most
def _digest(path: str, size: int, mtime_ns: int, chunk: int = 1 << 23) -> str:
    digest = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
