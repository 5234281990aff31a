"""ONNX graphs of PyTorch model files, exported once and kept for the next run.

`egal score --runtime auto` scores a `.pt` model with onnxruntime (egal.pipeline.runtime). The
graph it needs is exported once and kept beside the model file, named after the file and a key:

    model.pt  ->  model.pt.<key>.onnx       key: 16 hex digits of sha256(model file's sha256, export format)

A changed model file (retrained in place) or an egal that exports differently (another opset, IR
version or set of outputs) has another key, so a stale graph is never used; the graphs of earlier
keys of the same model file are deleted from its folder when a new one is written. Where the model's folder cannot
be written (read-only storage), the graph goes to the user cache folder instead (`EGAL_CACHE_DIR`,
else `$XDG_CACHE_HOME/egal/onnx`, else `~/.cache/egal/onnx`). A graph is written whole under a
temporary name and renamed (egal.onnx.export_onnx), so no reader ever sees part of one, and two runs
exporting at once both end with a complete graph. Beside each graph, `<graph>.sha256` holds the SHA-256
of the file as written: a graph whose bytes no longer match it (damaged, truncated, copied in part) is
never used, and egal.pipeline.runtime exports it again; one that matches is the export itself, so a
difference from PyTorch's scores is a property of the model, reported as such, not a reason to export
again on every run.

Exporting needs PyTorch, onnx and onnxscript (`egal-al[export]`); finding a cached graph does not.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from dataclasses import dataclass

from .._atomic import replaced_atomically
from .._paths import file_sha256
from ..errors import EgalError
from . import graph

CACHE_DIR_ENV = "EGAL_CACHE_DIR"
CHECKSUM_SUFFIX = ".sha256"


class GraphCacheError(EgalError):
    """No folder could hold the exported graph (the model's folder and the user cache folder are read-only)."""


@dataclass(frozen=True)
class CachedGraph:
    """The ONNX graph of a model file.

    path:     the graph file
    exported: written by this call (False: found in the cache)
    seconds:  time the export took (0 when found)
    """

    path: str
    exported: bool
    seconds: float = 0.0


def cache_key(model_sha256: str) -> str:
    """The key of a model file's graph: its content and everything about the export that changes the graph."""
    export_format = f"{graph.FORMAT};opset={graph.OPSET};ir={graph.IR_VERSION};outputs={','.join(graph.OUTPUTS)}"
    return hashlib.sha256(f"{model_sha256};{export_format}".encode()).hexdigest()[:16]


def user_cache_dir() -> str:
    """Where graphs go when the model's folder is read-only."""
    if os.environ.get(CACHE_DIR_ENV):
        return os.environ[CACHE_DIR_ENV]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "egal", "onnx")


def cache_folders(model_path) -> list[str]:
    """The folders a model's graph may be in, in the order they are tried: beside the model, then the user's."""
    beside = os.path.dirname(os.path.abspath(os.fspath(model_path)))
    user = os.path.abspath(user_cache_dir())
    return [beside] if user == beside else [beside, user]


def graph_name(model_path, model_sha256: str) -> str:
    return f"{os.path.basename(os.fspath(model_path))}.{cache_key(model_sha256)}.onnx"


def find_cached(model_path, model_sha256: str) -> str | None:
    """The cached graph of this model file's content that matches its checksum, or None."""
    return next((path for path in _candidates(model_path, model_sha256) if intact(path)), None)


def unverified_cached(model_path, model_sha256: str) -> list[str]:
    """The cached graphs of this model file's content that do not match their checksum (or have none)."""
    return [path for path in _candidates(model_path, model_sha256) if not intact(path)]


def intact(graph_path: str) -> bool:
    """Whether the graph file's bytes are those its export wrote (its .sha256 file says which)."""
    try:
        with open(graph_path + CHECKSUM_SUFFIX) as f:
            expected = f.read().strip()
        return expected == file_sha256(graph_path)
    except (OSError, ValueError):  # missing, unreadable, or not text (a damaged checksum file)
        return False


def _candidates(model_path, model_sha256: str) -> list[str]:
    name = graph_name(model_path, model_sha256)
    paths = (os.path.join(folder, name) for folder in cache_folders(model_path))
    return [path for path in paths if os.path.isfile(path)]


def export_to_cache(model_path, model_sha256: str) -> CachedGraph:
    """Export the model file to its cache entry (replacing what is there); returns where it went.

    Raises GraphCacheError when no cache folder can be written, egal.onnx.ExportError when the model
    has no closed-form Grad-CAM (an ONNX graph has no backward pass), ModuleNotFoundError without the
    export extra.
    """
    from .export import export_onnx, is_egal_graph  # import torch and onnx: only when a graph must be written

    folders = cache_folders(model_path)
    folder = next((f for f in folders if _writable(f)), None)
    if folder is None:
        raise GraphCacheError(f"cannot write the ONNX graph of {os.fspath(model_path)!r}: neither "
                              f"{' nor '.join(repr(f) for f in folders)} is writable (set {CACHE_DIR_ENV} to a "
                              "writable folder)")
    path = os.path.join(folder, graph_name(model_path, model_sha256))
    start = time.perf_counter()
    if os.path.isfile(path) and not is_egal_graph(path):  # damaged beyond reading: export_onnx replaces only a
        with contextlib.suppress(FileNotFoundError):      # graph egal exported, and this entry is the cache's own
            os.remove(path)
    export_onnx(model_path, path, overwrite=True)
    try:
        with replaced_atomically(path + CHECKSUM_SUFFIX) as checksum, open(checksum, "w") as f:
            f.write(file_sha256(path) + "\n")
    except BaseException:  # a graph without its checksum is never used: it would only be exported again
        with contextlib.suppress(OSError):
            os.remove(path)
        raise
    seconds = time.perf_counter() - start
    if folder == folders[0]:  # the user cache folder holds graphs of same-named models from other folders
        _remove_stale(folder, os.path.basename(os.fspath(model_path)), keep=path)
    return CachedGraph(path, exported=True, seconds=seconds)


def _writable(folder: str) -> bool:
    """Whether a file can be created in `folder` (made if missing): tried, not guessed from permissions."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".egal-write-test-"):
            return True
    except OSError:
        return False


def _remove_stale(folder: str, model_name: str, *, keep: str) -> None:
    """Delete the graphs of earlier contents of the same model file (their keys can never match again)."""
    pattern = re.compile(re.escape(model_name) + r"\.[0-9a-f]{16}\.onnx(" + re.escape(CHECKSUM_SUFFIX) + ")?")
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if pattern.fullmatch(entry) and path not in (keep, keep + CHECKSUM_SUFFIX):
            try:
                os.remove(path)
            except OSError:
                pass  # another run's graph being replaced at the same moment, or a read-only file: harmless
