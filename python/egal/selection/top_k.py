"""Choosing what to annotate next (docs/scoring.md, Selection)."""
from __future__ import annotations

import numpy as np

from ._checks import check_k


def select_top_k(scores, ids, k: int) -> np.ndarray:
    """The ids of the k highest-scoring samples, best first.

    Ties are broken by id ascending so a selection is reproducible; NaN scores
    (samples with bad inputs) are never selected, so fewer than k ids come back
    when fewer than k scores are valid. ids must be unique (strings or ints).
    """
    k = check_k(k)
    scores = np.asarray(scores, dtype=np.float64)
    ids = np.asarray(ids)
    if scores.ndim != 1 or ids.ndim != 1:
        raise ValueError(f"scores and ids must be 1-d, got shapes {scores.shape} and {ids.shape}")
    if scores.shape != ids.shape:
        raise ValueError(f"scores has {scores.shape[0]} entries but ids has {ids.shape[0]}")
    if np.unique(ids).shape[0] != ids.shape[0]:
        raise ValueError("ids must be unique: a tie-break by id needs one id per sample")
    valid = np.flatnonzero(~np.isnan(scores))
    order = np.lexsort((ids[valid], -scores[valid]))  # last key is the primary key
    return ids[valid[order[:k]]]
