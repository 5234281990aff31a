"""Euclidean distances between candidates' embeddings, for k-center and k-means.

Both methods need only where points lie relative to each other, so the candidates are first
centred on their mean and scaled to at most 1 in magnitude, in float64 (`for_distances`): a batch
then does not change when every embedding is moved by the same vector or multiplied by the same
factor (the pooled features of a linear head share a large common mean), and nothing overflows.
Distances come from |x|^2 - 2 x.c + |c|^2, one matrix-vector product per pick. In float32 its
rounding swamped the distances within a tight cluster (adjacent slices of one scan embed close
together, far from the mean); in float64 it is exact to about 1e-13 of the squared norms, and the
few points nearer each other than that are measured again directly, as |x - c|^2.
"""
from __future__ import annotations

import numpy as np

# Below this fraction of the two points' squared norms, |x|^2 - 2 x.c + |c|^2 in float64 may be mostly rounding.
_CANCELLATION = 1e-9


def for_distances(embeddings: np.ndarray) -> np.ndarray:
    """[M, D] float64: the rows centred on their mean and scaled so that the largest magnitude is 1 (a new array)."""
    x = np.array(embeddings, dtype=np.float64)
    if x.size:
        x -= x.mean(axis=0)
        scale = float(np.abs(x).max())
        if scale > 0:
            x /= scale
    return x


def squared_norms(x: np.ndarray) -> np.ndarray:
    """[M] float64 |x_i|^2."""
    return np.einsum("ij,ij->i", x, x)


def squared_distances_to(x: np.ndarray, squared: np.ndarray, row: int) -> np.ndarray:
    """[M] float64 |x_i - x_row|^2 for every row i (x from for_distances, squared its squared_norms)."""
    d = squared - 2.0 * (x @ x[row]) + squared[row]
    near = np.flatnonzero(d < _CANCELLATION * (squared + squared[row]))
    if near.size:
        difference = x[near] - x[row]
        d[near] = np.einsum("ij,ij->i", difference, difference)
    return d


def nearest_centres(x: np.ndarray, centres: np.ndarray, block: int = 4096) -> np.ndarray:
    """[M] index of the nearest of `centres` [k, D] for each row of x [M, D] (both float64, for_distances'
    space), in blocks of `block` rows; |x|^2 is the same for every centre of a row, so it is left out. A row
    whose two nearest centres are nearer each other in that sum than its rounding is measured again directly."""
    centre_squared = squared_norms(centres)
    labels = np.empty(x.shape[0], dtype=np.int64)
    for start in range(0, x.shape[0], block):
        rows = x[start:start + block]
        distances = centre_squared[None, :] - 2.0 * (rows @ centres.T)
        labels[start:start + block] = np.argmin(distances, axis=1)
        if centres.shape[0] > 1:
            two = np.argpartition(distances, 1, axis=1)[:, :2]
            gap = np.abs(np.take_along_axis(distances, two, axis=1) @ np.array([1.0, -1.0]))
            close = gap <= _CANCELLATION * (squared_norms(rows) + centre_squared.max())
            # Two centres at one point (k-means++ on duplicates) tie exactly: nothing to measure again there.
            close &= (centres[two[:, 0]] != centres[two[:, 1]]).any(axis=1)
            for i in np.flatnonzero(close):
                difference = centres - rows[i]
                labels[start + i] = int(np.argmin(np.einsum("ij,ij->i", difference, difference)))
    return labels
