"""Choosing a batch to annotate: `select_batch`, the one place the selection rules are put together.

    1. the ranked order: valid scores only, score descending, ties by id (top_k);
    2. group caps, when asked: at most `per_group` rows per group, each group's best first (group_cap);
    3. diversity, when asked: the first `candidate_factor * k` rows of that order are the candidates,
       and a method picks k of them in the embedding space (kcenter, cluster);
    4. the batch, listed in the ranked order (best score first).

With diversity "none" step 3 is skipped and the batch is the first k rows of step 2; without
groups that is exactly `select_top_k`. With a cap, each group has at most `per_group`
candidates, so the cap holds whatever the diversity method picks.

Why candidate_factor = 10: the score says which rows are worth a radiologist's time, the
embedding only which of those are alike; the candidates must stay among the rows the score
rates highly, but be several times the batch, or there is nothing to choose from. Ten times
the batch is the pre-filter of Zhdanov (2019), "Diverse mini-batch active learning" (beta = 10,
with similar results up to 50), and keeps k-center and k-means over the candidates cheap:
O(k * 10k * D), independent of the pool size once the candidates are found (O(N)).

Fewer than k rows come back when fewer can be selected (rows with a valid score, and with a
cap at most per_group of each group): `Selection.selectable` says how many could be, and
callers report the shortfall. Bad options and bad input raise SelectionError naming the
argument.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._checks import bad_argument, check_choice, check_int, check_k
from .cluster import cluster_order
from .embeddings import checked_embeddings, embedding_source
from .errors import SelectionError
from .group_cap import cap_per_group, group_codes, selectable_rows
from .kcenter import kcenter_order
from .top_k import id_array, infinite_scores, ranked_positions, score_array

DIVERSITY_METHODS = ("none", "kcenter", "cluster")
CANDIDATE_FACTOR = 10  # m: the diversity methods choose among the top m * k rows (see above)


@dataclass(frozen=True)
class Selection:
    """A chosen batch.

    positions:  rows (into the scores given) of the batch, best score first
    ids:        their ids, in the same order
    k:          the batch size asked for
    selectable: how many rows could be selected at most (valid scores; with a cap, at most per_group a group)
    candidates: the rows the diversity method chose among (0 for diversity "none")
    diversity, per_group: the method and cap used (per_group None: no cap)
    """

    positions: np.ndarray
    ids: np.ndarray
    k: int
    selectable: int
    candidates: int
    diversity: str
    per_group: int | None

    @property
    def shortfall(self) -> int:
        """How many fewer rows than k the batch holds (0 when it is complete)."""
        return self.k - len(self.positions)


def select_batch(scores, ids, k: int, *, diversity: str = "none", embeddings=None, groups=None,
                 per_group: int | None = None, candidate_factor: int = CANDIDATE_FACTOR, seed: int = 0) -> Selection:
    """The k rows to annotate next under the rules above.

    scores:     [N] floats (NaN: never selected); ids: [N] unique ids (the tie-break)
    diversity:  "none" (top k), "kcenter" (egal.selection.kcenter) or "cluster" (egal.selection.cluster)
    embeddings: [N, D] array (row i for score i), or an EmbeddingFile (egal score --embeddings); needed by
                "kcenter" and "cluster", which read only their candidates' rows
    groups:     [N] group of each row (a patient id, a study); with per_group, at most per_group rows per group
    candidate_factor: m, the candidates are the top m * k rows (after caps)
    seed:       the k-means++ start of "cluster" (the result is deterministic for a given seed)
    """
    k = _user_check(check_k, k)
    diversity = _user_check(check_choice, diversity, "diversity", DIVERSITY_METHODS)
    candidate_factor = _user_check(check_int, candidate_factor, "candidate_factor")
    seed = _user_check(check_int, seed, "seed", minimum=0)
    scores, ids = score_array(scores), id_array(ids)
    if scores.ndim != 1 or ids.shape != scores.shape:
        raise bad_argument(SelectionError, "scores", f"and ids must be 1-d of one length, got shapes {scores.shape} "
                           f"and {ids.shape}")
    if np.unique(ids).shape[0] != ids.shape[0]:
        raise bad_argument(SelectionError, "ids", "must be unique: a tie-break by id needs one id per row")
    problem = infinite_scores(scores, ids)
    if problem:
        raise bad_argument(SelectionError, "scores", problem)
    if (groups is None) != (per_group is None):
        given, missing = ("groups", "per_group") if per_group is None else ("per_group", "groups")
        raise bad_argument(SelectionError, missing, f"is needed with {given}: a group cap needs both the group of "
                           "each row and the most rows to take from one group")
    if diversity != "none" and embeddings is None:
        raise bad_argument(SelectionError, "embeddings", f"are needed by diversity={diversity!r}: it measures "
                           "distances between rows in the model's embedding space (egal score --embeddings writes "
                           "them); use diversity='none' for the plain top k")
    source = embedding_source(embeddings, scores.shape[0]) if diversity != "none" else None

    valid = np.flatnonzero(~np.isnan(scores))
    if per_group is not None:
        per_group = min(_user_check(check_int, per_group, "per_group"), max(1, scores.shape[0]))  # no more a group
        codes = group_codes(groups, valid, scores.shape[0])
        selectable = selectable_rows(codes, valid, per_group)
        first = lambda limit: _capped_order(scores, ids, codes, per_group, limit, valid.size)  # noqa: E731
    else:
        selectable = int(valid.size)
        first = lambda limit: ranked_positions(scores, ids, limit)  # noqa: E731

    if diversity == "none":
        chosen, candidates = first(k), 0
    else:
        pool = first(max(k, candidate_factor * k))
        x = checked_embeddings(source, pool, ids)
        picks = kcenter_order(x, k) if diversity == "kcenter" else cluster_order(x, k, seed=seed)
        chosen, candidates = pool[np.sort(picks)], int(pool.size)
    return Selection(chosen, ids[chosen], k, selectable, candidates, diversity, per_group)


def _capped_order(scores, ids, codes, per_group: int, limit: int, valid: int) -> np.ndarray:
    """The first `limit` rows of the capped ranked order. A row's place under the cap depends only on the rows
    ranked above it, so the cap of a prefix of the order is a prefix of the capped order: look at a prefix
    four times longer until it holds `limit` rows or the whole order."""
    prefix = max(limit, 1)
    while True:
        capped = cap_per_group(ranked_positions(scores, ids, prefix), codes, per_group)
        if capped.size >= limit or prefix >= valid:
            return capped[:limit]
        prefix *= 4


def _user_check(check, value, *args, **kwargs):
    """One of egal._checks' checks, its error raised as a SelectionError (a user error) naming the argument."""
    try:
        return check(value, *args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise bad_argument(SelectionError, getattr(exc, "argument", args[0] if args else "k"),
                           getattr(exc, "problem", str(exc))) from None
