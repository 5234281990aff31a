"""Score-aware greedy k-center: spread the batch over the embedding space, leaning towards high scores.

The candidates come in ranked order (best score first). The first pick is the best
candidate; every next pick is the candidate that maximises

    weight_i * d_i,    weight_i = 1 - i / M,    d_i = Euclidean distance to the nearest pick so far

over the M candidates not yet picked (i = 0 for the best candidate). The distance makes
the batch cover the space (a near-copy of a pick has d close to 0 and waits until nothing
else is left); the weight, which falls linearly with the rank from 1 to 1/M, makes a
lower-ranked candidate win only when it is that much farther away (the candidate ranked
halfway must be twice as far as the best one). The weight reads only the order, not the
score values, so it means the same for `--combine raw` and `--combine rank`. Ties go to
the better-ranked candidate. Deterministic.

Cost: k steps, each one matrix-vector product over the candidates: O(k M D) time,
O(M D) memory (the candidates' embeddings and one distance per candidate).
"""
from __future__ import annotations

import numpy as np

from .distances import for_distances, squared_distances_to, squared_norms


def kcenter_order(embeddings: np.ndarray, k: int) -> np.ndarray:
    """Positions (rows of `embeddings`, the candidates best first) of the k picks, in the order picked."""
    m = embeddings.shape[0]
    if k >= m:
        return np.arange(m, dtype=np.int64)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    x = for_distances(embeddings)
    squared = squared_norms(x)
    weight = 1.0 - np.arange(m, dtype=np.float64) / m
    nearest = np.full(m, np.inf)
    picked = np.zeros(m, dtype=bool)
    order = np.empty(k, dtype=np.int64)
    pick = 0
    for step in range(k):
        order[step] = pick
        picked[pick] = True
        nearest = np.minimum(nearest, squared_distances_to(x, squared, pick))
        if step + 1 < k:
            gain = weight * np.sqrt(nearest)
            gain[picked] = -np.inf
            pick = int(np.argmax(gain))  # the first maximum: the better-ranked candidate
    return order
