"""Euclidean distances between candidates' embeddings, for k-center and k-means.

Both methods need only where points lie relative to each other, so the candidates are first
centred on their mean and scaled to at most 1 in magnitude (`for_distances`): a batch then does
not change when every embedding is moved by the same vector or multiplied by the same factor
(the pooled features of a linear head share a large common mean), and no product overflows.
Distances come from |x|^2 - 2 x.c + |c|^2, one matrix-vector product, whose float32 rounding
swamps the distance of points much nearer each other than to the origin; those few are measured
again directly, as |x - c|^2.
"""
from __future__ import annotations

import numpy as np

# Below this fraction of the two points' squared norms, |x|^2 - 2 x.c + |c|^2 in float32 is mostly rounding.
_CANCELLATION = 1e-3


def for_distances(embeddings: np.ndarray) -> np.ndarray:
    """[M, D] float32: the rows centred on their mean and scaled so that the largest magnitude is 1 (a new array)."""
    x = np.asarray(embeddings, dtype=np.float32)
    centred = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
    scale = float(np.abs(centred).max()) if centred.size else 0.0
    if scale > 0:
        centred /= np.float32(scale)
    return np.ascontiguousarray(centred)


def squared_norms(x: np.ndarray) -> np.ndarray:
    """[M] float64 |x_i|^2."""
    return np.einsum("ij,ij->i", x, x, dtype=np.float64)


def squared_distances_to(x: np.ndarray, squared: np.ndarray, row: int) -> np.ndarray:
    """[M] float64 |x_i - x_row|^2 for every row i (x from for_distances, squared its squared_norms)."""
    d = squared - 2.0 * (x @ x[row]).astype(np.float64) + squared[row]
    near = np.flatnonzero(d < _CANCELLATION * (squared + squared[row]))
    if near.size:
        difference = x[near] - x[row]
        d[near] = np.einsum("ij,ij->i", difference, difference, dtype=np.float64)
    return d
