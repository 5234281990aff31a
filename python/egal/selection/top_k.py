"""Plain top-k selection (docs/scoring.md, Selection): the order every other method starts from.

The order is score descending, ties by id ascending; NaN scores are never selected.
`select_top_k` is the paper's rule as egal has always applied it; `ranked_positions`
gives the same order as positions, and only its first `limit` rows, without sorting
the whole pool (what the diversity methods need from a million rows).
"""
from __future__ import annotations

import numpy as np

from .._checks import bad_argument, check_k
from ..errors import EgalTypeError


def select_top_k(scores, ids, k: int) -> np.ndarray:
    """The ids of the k highest-scoring samples, best first.

    Ties are broken by id ascending so a selection is reproducible; NaN scores
    (samples with bad inputs) are never selected, so fewer than k ids come back
    when fewer than k scores are valid. ids must be unique (strings or ints).
    """
    k = check_k(k)
    scores, ids = score_array(scores), id_array(ids)
    if scores.ndim != 1 or ids.ndim != 1:
        raise ValueError(f"scores and ids must be 1-d, got shapes {scores.shape} and {ids.shape}")
    if scores.shape != ids.shape:
        raise ValueError(f"scores has {scores.shape[0]} entries but ids has {ids.shape[0]}")
    if np.unique(ids).shape[0] != ids.shape[0]:
        raise ValueError("ids must be unique: a tie-break by id needs one id per sample")
    problem = infinite_scores(scores, ids)
    if problem:
        raise ValueError(f"scores {problem}")
    valid = np.flatnonzero(~np.isnan(scores))
    order = np.lexsort((ids[valid], -scores[valid]))  # last key is the primary key
    return ids[valid[order[:k]]]


def score_array(scores) -> np.ndarray:
    """scores as float64 numpy: numbers from numpy, a list, or a torch tensor of any float dtype (bfloat16
    included) on any device; text is refused, not parsed."""
    if scores is None:
        raise bad_argument(EgalTypeError, "scores", "must be an array of numbers, got None")
    if type(scores).__module__.split(".")[0] == "torch":
        scores = scores.detach().float().cpu().numpy()
    array = np.asarray(scores)
    if array.dtype.kind not in "fiub":
        raise bad_argument(EgalTypeError, "scores", f"must be numbers, got dtype {array.dtype}")
    return array.astype(np.float64)


def id_array(ids) -> np.ndarray:
    """ids as numpy, all text or all integers: a list mixing the two would be compared as text (1 after "10"),
    a tie-break nobody asked for."""
    if ids is None:
        raise bad_argument(EgalTypeError, "ids", "must be an array of ids, got None")
    if not isinstance(ids, np.ndarray):
        kinds = {"text" if isinstance(i, str) else "integer" if isinstance(i, (int, np.integer)) else type(i).__name__
                 for i in ids}
        if len(kinds) > 1:
            raise bad_argument(EgalTypeError, "ids", "must be all text or all integers, got "
                               + ", ".join(sorted(kinds)))
    return np.asarray(ids)


def infinite_scores(scores: np.ndarray, ids: np.ndarray) -> str | None:
    """What is wrong when some scores are infinite (an acquisition score lies in [0, 1], or is NaN for no
    score: an infinity is a corrupted value, which would otherwise rank first), else None."""
    infinite = np.flatnonzero(np.isinf(scores))
    if not infinite.size:
        return None
    return f"must be finite or NaN (no score); {infinite.size} are infinite, first for id {str(ids[infinite[0]])!r}"


def ranked_positions(scores: np.ndarray, ids: np.ndarray, limit: int | None = None) -> np.ndarray:
    """Positions of the rows with a valid (non-NaN) score in select_top_k's order, the first `limit` of them
    (all without a limit). scores: float64 [N]; ids: [N], unique (checked by the caller).

    O(N) to find the rows that can be among the first `limit` (a partition on the score), then a sort of
    those alone: O(N + limit log limit)."""
    valid = np.flatnonzero(~np.isnan(scores))
    if limit is not None and limit < valid.size:
        if limit <= 0:
            return np.zeros(0, dtype=np.int64)
        negated = -scores[valid]
        cut = np.partition(negated, limit - 1)[limit - 1]  # minus the limit-th largest score
        above = valid[negated < cut]
        tied = valid[negated == cut]
        # Rows tied at the cut compete by id, as in the full order.
        tied = tied[np.argsort(ids[tied], kind="stable")[:limit - above.size]]
        valid = np.concatenate([above, tied])
    order = np.lexsort((ids[valid], -scores[valid]))
    return valid[order].astype(np.int64)
