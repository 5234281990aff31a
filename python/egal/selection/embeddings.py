"""The embeddings that the diversity methods measure distances in, and their checks.

A selection reads only its candidates' embeddings (`take`), never the whole pool's, so
that a million rows of 512-d vectors need not fit in memory: an `ArrayEmbeddings` wraps
an array already in memory, `egal.selection.embedding_file.EmbeddingFile` reads the rows
asked for from an `egal score --embeddings` file.
"""
from __future__ import annotations

import numpy as np

from .._checks import bad_argument
from .errors import SelectionError


class ArrayEmbeddings:
    """Embeddings in memory: an [N, D] array (numpy, or anything np.asarray takes), row i for row i of the scores."""

    def __init__(self, array, rows: int):
        try:
            array = np.asarray(array)
        except (TypeError, ValueError, RuntimeError) as exc:  # a CUDA tensor, a tensor that requires grad, ...
            raise bad_argument(SelectionError, "embeddings", f"cannot be read as a numpy array ({exc})") from None
        if array.ndim != 2 or array.shape[0] != rows or array.shape[1] < 1:
            raise bad_argument(SelectionError, "embeddings",
                               f"must be [N, D] with N = {rows} (one row per score) and D >= 1, got shape "
                               f"{array.shape}")
        if not np.issubdtype(array.dtype, np.floating):
            raise bad_argument(SelectionError, "embeddings", f"must hold floating-point numbers, got {array.dtype}")
        self._array = array
        self.dim = array.shape[1]

    def take(self, positions: np.ndarray, ids: np.ndarray) -> np.ndarray:
        taken = self._array[positions]
        with np.errstate(over="ignore"):
            x = taken.astype(np.float32)
        beyond = np.isfinite(taken).all(axis=1) & ~np.isfinite(x).all(axis=1)
        if beyond.any():
            named = ", ".join(repr(str(i)) for i in ids[beyond][:5])
            raise bad_argument(SelectionError, "embeddings",
                               f"hold values beyond float32's range (3.4e38) for {int(beyond.sum())} row(s) "
                               f"({named}): scale them down")
        return x


def embedding_source(embeddings, rows: int):
    """An object with .take(positions, ids) -> float32 [len(positions), D]: `embeddings` itself when it is an
    EmbeddingFile, else an ArrayEmbeddings over it (torch tensors and DataFrames have a .take of their own)."""
    from .embedding_file import EmbeddingFile

    if isinstance(embeddings, EmbeddingFile):
        return embeddings
    return ArrayEmbeddings(embeddings, rows)


def checked_embeddings(source, positions: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The embeddings of `positions` (float32 [len, D]); an error naming the ids of rows whose embedding is not
    finite (NaN or Inf): they cannot be placed in the space, and leaving them out silently would change the
    batch without saying so."""
    x = source.take(positions, ids[positions])
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        named = ", ".join(repr(str(i)) for i in ids[positions][bad][:5]) + (", ..." if bad.sum() > 5 else "")
        raise bad_argument(SelectionError, "embeddings",
                           f"hold NaN or Inf for {int(bad.sum())} candidate row(s) ({named}) "
                           "whose score is valid: a diversity method cannot place them; fix or rescore those rows, "
                           "or select without diversity")
    return x
