"""Cluster-based selection: k-means over the candidates, then the best candidate of each cluster.

The M candidates (the top rows by score) are clustered into k clusters with k-means
(Lloyd's iterations from a k-means++ start drawn with a fixed seed, so the result is
deterministic); each cluster gives its best-ranked candidate. Clusters of near-copies
give one row, so a batch holds at most one of each; the batch is the best rows of k
different regions of the embedding space. When fewer than k clusters are non-empty,
the next picks are each cluster's second best, then third best, ... (better-ranked first),
so the batch is always k rows when there are k candidates. This follows Zhdanov (2019),
"Diverse mini-batch active learning" (pre-filter the top beta*k by informativeness, cluster
into k, one sample per cluster), taking the best-scored member of each cluster rather
than the one nearest its centre.

Cost: each iteration is one M x k distance matrix (a matrix product, in blocks): O(M k D)
per iteration, at most ITERATIONS iterations; memory O(M D + block k).
"""
from __future__ import annotations

import numpy as np

from .distances import for_distances, nearest_centres, squared_distances_to, squared_norms
from .group_cap import place_in_group

ITERATIONS = 20  # Lloyd iterations at most; they stop earlier once no assignment changes
_BLOCK = 4096  # candidates per block of the distance matrix


def cluster_order(embeddings: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """Positions (rows of `embeddings`, the candidates best first) of the k picks: tier by tier (each
    cluster's best, then each cluster's second best, ...), within a tier best-ranked first."""
    m = embeddings.shape[0]
    if k >= m:
        return np.arange(m, dtype=np.int64)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    labels = kmeans(for_distances(embeddings), k, seed=seed)
    tier = place_in_group(labels)  # 0 for the best-ranked member of its cluster
    return np.lexsort((np.arange(m), tier))[:k].astype(np.int64)


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, iterations: int = ITERATIONS) -> np.ndarray:
    """The cluster (0..k-1) of every row of x [M, D] float64 (egal.selection.distances.for_distances), by
    Lloyd's algorithm from a k-means++ start."""
    squared = squared_norms(x)
    centres = x[_kmeans_plus_plus(x, squared, k, np.random.default_rng(seed))].copy()
    labels = None
    for _ in range(iterations):
        new = nearest_centres(x, centres, _BLOCK)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        order = np.argsort(labels, kind="stable")
        present, starts = np.unique(labels[order], return_index=True)
        sums = np.add.reduceat(x[order], starts, axis=0)
        counts = np.diff(np.r_[starts, labels.size])
        centres[present] = sums / counts[:, None]  # an empty cluster keeps its centre
    return labels


def _kmeans_plus_plus(x: np.ndarray, squared: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k starting centres (rows of x): the first uniformly, each next with probability proportional to its
    squared distance to the nearest centre so far (Arthur and Vassilvitskii, 2007)."""
    m = x.shape[0]
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(m)
    nearest = squared_distances_to(x, squared, int(chosen[0]))
    for i in range(1, k):
        total = nearest.sum()
        if total <= 0:  # every point coincides with a centre: take the first ones not yet chosen
            rest = np.setdiff1d(np.arange(m), chosen[:i])[:k - i]
            chosen[i:i + rest.size] = rest
            return chosen[:i + rest.size]
        chosen[i] = rng.choice(m, p=nearest / total)
        nearest = np.minimum(nearest, squared_distances_to(x, squared, int(chosen[i])))
    return chosen
