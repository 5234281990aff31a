"""N-way K-shot episodes for prototypical-network training.

Each episode draws `n_way` classes, then `k_shot` support and `n_query` query
rows from each (without replacement inside the episode). Classes with too few
rows contribute what they have, split between support and query, so that a
small or unbalanced labelled set still trains; a class needs at least 2 rows
(one support, one query) to take part.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import EgalError


@dataclass(frozen=True)
class Episode:
    support: np.ndarray  # [S] row indices
    support_labels: np.ndarray  # [S] episode-local class index 0..n-1
    query: np.ndarray  # [Q] row indices
    query_labels: np.ndarray  # [Q] episode-local class index
    classes: np.ndarray  # [n] global class index of each episode class


def sample_episode(labels, n_way: int, k_shot: int, n_query: int, rng: np.random.Generator) -> Episode:
    labels = np.asarray(labels)
    usable = np.array(sorted(c for c in np.unique(labels) if (labels == c).sum() >= 2))
    if usable.size < 2:
        raise EgalError("an episode needs at least 2 classes with at least 2 labelled rows each")
    n = min(n_way, usable.size)
    classes = np.sort(rng.choice(usable, size=n, replace=False))
    support, support_labels, query, query_labels = [], [], [], []
    for local, c in enumerate(classes):
        rows = rng.permutation(np.flatnonzero(labels == c))
        k = min(k_shot, rows.size - 1)  # keep at least one query
        q = min(n_query, rows.size - k)
        support.append(rows[:k])
        query.append(rows[k:k + q])
        support_labels.append(np.full(k, local))
        query_labels.append(np.full(q, local))
    return Episode(np.concatenate(support), np.concatenate(support_labels), np.concatenate(query),
                   np.concatenate(query_labels), classes)


def episodes_per_epoch(num_rows: int, n_way: int, k_shot: int, n_query: int) -> int:
    """Enough episodes that an epoch draws about as many rows as the labelled set holds."""
    return max(1, int(np.ceil(num_rows / (n_way * (k_shot + n_query)))))
