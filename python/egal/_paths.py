"""Paths egal writes: the names of the files beside an output, and the checks every command makes on a path it
will write, before any work: a failed or mistaken run must never destroy an input or a file the user did not ask
to replace."""
from __future__ import annotations

import hashlib
import os
import tempfile

from .errors import EgalError


def same_path(a, b) -> bool:
    """a and b name the same file (through links or relative parts)."""
    a, b = os.fspath(a), os.fspath(b)
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def sidecar_path(out, suffix: str) -> str:
    """A file beside the output `out`, named after it: NAME.parquet -> NAME<suffix> (out without the .parquet
    extension keeps its whole name)."""
    out = os.fspath(out)
    stem = out[:-len(".parquet")] if out.endswith(".parquet") else out
    return stem + suffix


def file_sha256(path) -> str:
    """The sha256 of a file's bytes, read 1 MiB at a time (a model or graph of any size in bounded memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_not_an_input(path, name: str, inputs: dict) -> None:
    """EgalError when `path` (the argument `name`) is one of `inputs` ({argument: path}): writing it would destroy
    that input, with --overwrite or without."""
    for input_name, input_path in inputs.items():
        if input_path is not None and os.fspath(input_path) and same_path(path, input_path):
            raise EgalError(f"{name} {os.fspath(path)!r} is the same file as {input_name}: writing it would destroy "
                            "that input; choose another path")


def check_distinct_outputs(outputs: dict) -> None:
    """EgalError when two of the files one run writes ({argument: path}, None for one it does not write) are the
    same file: the one written last would replace the other."""
    named = [(name, path) for name, path in outputs.items() if path is not None and os.fspath(path)]
    for i, (name, path) in enumerate(named):
        for other, other_path in named[i + 1:]:
            if same_path(path, other_path):
                raise EgalError(f"{other} {os.fspath(other_path)!r} is the same file as {name}: the run writes "
                                "both, and one would replace the other; give them different paths")


def check_outside_folder_pool(path, name: str, pool) -> None:
    """EgalError when `path` (the argument `name`) lies inside the folder `pool`: every *.parquet below a folder
    pool is part of it, so a Parquet file written there (or its .parts folder) would change the pool."""
    if pool is None or not os.path.isdir(pool):
        return
    folder = os.path.realpath(pool)
    target = os.path.realpath(os.path.dirname(os.path.abspath(os.fspath(path))))
    if os.path.commonpath([folder, target]) == folder:
        raise EgalError(f"{name} {os.fspath(path)!r} is inside the folder pool {os.fspath(pool)!r}: every *.parquet "
                        "below that folder is part of the pool, so this file would change it; write it elsewhere")


def is_parquet_file(path) -> bool:
    """The file ends with Parquet's magic bytes (a whole Parquet file, not a CSV, image or volume)."""
    try:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            return f.read(4) == b"PAR1"
    except OSError:
        return False


def is_pool_file(path) -> bool:
    """A Parquet file with the columns of an egal pool (id, and image or image_path): what a pool's
    --overwrite may replace, never another table, an image or a volume."""
    schema = _parquet_schema(path)
    return schema is not None and "id" in schema.names and bool({"image", "image_path"} & set(schema.names))


def check_utf8_name(path, name: str) -> None:
    """EgalError when `path` is not UTF-8 text (Linux hands Python a file name of another encoding as lone
    surrogates): pyarrow, which writes egal's Parquet files, cannot name a file so."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fspath(path).encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        raise EgalError(f"{name} '{shown}' is not UTF-8 text (a file name in another encoding), which the Parquet "
                        "writer cannot use: choose another name") from None


def check_replaceable(path, name: str, is_own, what: str) -> None:
    """EgalError when `path` exists and is not `what` (is_own(path) is False): --overwrite and --resume replace an
    earlier output of the same kind, never an input table, another pool, one of a pool's images or any other
    file that a mistyped path names."""
    path = os.fspath(path)
    special = os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path))  # a FIFO, a device
    if special or (os.path.isfile(path) and not is_own(path)):
        raise EgalError(f"{name} {path!r} exists and is not {what}: it is never replaced, --overwrite or not; "
                        "choose another path")


def has_parquet_metadata(path, key: bytes) -> bool:
    """A Parquet file whose schema metadata holds `key` (what egal writes into its own outputs)."""
    schema = _parquet_schema(path)
    return schema is not None and key in (schema.metadata or {})


def has_parquet_columns(path, columns) -> bool:
    """A Parquet file with every one of `columns`."""
    schema = _parquet_schema(path)
    return schema is not None and set(columns) <= set(schema.names)


def _parquet_schema(path):
    if not is_parquet_file(path):
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError):
        return None


def starts_with_header(path, columns) -> bool:
    """A text file whose first line names `columns` first (a CSV that egal wrote)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(4096).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return False
    return first.split(",")[:len(columns)] == list(columns)


def check_new_file(path, name: str, *, replace: bool, hint: str = "overwrite=True (--overwrite)") -> None:
    """EgalError unless `path` (the argument `name`) can be written as a file: its folder exists, it is not a
    folder, it can be written in, and it does not exist yet unless `replace` (then `hint` says how to allow it)."""
    path = os.fspath(path)
    if not path.strip():
        raise EgalError(f"{name} is empty: name the file to write")
    if os.path.isdir(path) or path.endswith(("/", os.sep)):
        raise EgalError(f"{name} {path!r} is a folder: name the file to write")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise EgalError(f"{name} {path!r}: its folder {folder!r} does not exist")
    check_writable(path, name)
    if os.path.exists(path) and not replace:
        raise EgalError(f"{name} {path!r} already exists: pass {hint} to replace it, or choose another path")


def check_writable(path, name: str, *, inside: bool = False) -> None:
    """EgalError, said before the work rather than as an OS error after it, unless files can be created where
    `path` (the argument `name`) is written: in the folder that holds it, or with inside=True in `path` itself (an
    output folder, whose files are written in it). A folder still to be made counts as the nearest one above it
    that exists, where it will be made."""
    path = os.fspath(path)
    target = os.path.abspath(path)
    folder = target if inside else os.path.dirname(target)
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    if not os.access(folder, os.W_OK) or not _can_create_file_in(folder):
        where = "" if folder == target else f": its folder {folder!r}"
        raise EgalError(f"{name} {path!r}{where} is not writable here")


def _can_create_file_in(folder: str) -> bool:
    """Whether a file can be created in `folder`, found by creating (and removing) one: os.access alone says yes
    to root in a read-only mount or a kernel file system such as /sys or /proc, where the write then fails.

    The probe's name holds ".tmp-", which every check of a folder's files counts as egal's own (a temporary, as
    temporary_path names them): another egal writing beside this one (a second simulate into the same --out) must
    not see the probe as a stranger's file in the instant it exists."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".egal-write-check.tmp-")
    except OSError:
        return False
    os.close(fd)
    os.remove(probe)
    return True


def parquet_name_problem(path) -> str | None:
    """Why `path` is no name for a Parquet file egal writes (None: it is one): a name with another extension
    (pool.csv, scores.txt) would hold Parquet under a name that says otherwise; no extension is fine."""
    # (.PARQUET is refused too: a folder pool's files are found as *.parquet)
    return _extension_problem(path, ".parquet", os.fspath(path))


def csv_name_problem(path) -> str | None:
    """Why `path` is no name for a CSV file egal writes (None: it is one), as parquet_name_problem; .CSV is fine,
    as nothing finds a CSV by its extension."""
    return _extension_problem(path, ".csv", os.fspath(path).lower())


def _extension_problem(path, extension: str, compared: str) -> str | None:
    given = os.path.splitext(compared)[1]
    if given and given != extension:
        return f"give a {extension} name, got {os.fspath(path)!r}"
    return None
