"""Combining the two EG-AL terms into one score: the one place this rule is written in Python.

    combine_scores(entropy_norm, misalignment, alpha, method="raw" | "rank") -> score

Both methods read the per-sample outputs of docs/scoring.md (H_norm, the normalised
entropy, and D, the soft Dice misalignment) and never change them; they only
decide how the two are mixed (docs/scoring.md, "Extensions").

"raw": docs/scoring.md's formula, what the fused scorer returns as `score`:

    S = alpha * H_norm + (1 - alpha) * D        (S = H_norm where D is NaN: no ROI)

with alpha rounded to float32 as the scorer receives it. A row whose H_norm is
not finite, or whose D is infinite, gets NaN. The result has the inputs' floating dtype (float32 for the
scorer's outputs), computed in float64 and rounded once. The fused scorer mixes
its own unrounded (float64) terms, so from its float32 outputs this gives its
score exactly at alpha 0 and 1 and for rows without ROI, and otherwise within
one float32 unit in the last place (about 6e-8 on [0, 1]).

"rank": the same mix of the two terms' normalised ranks instead of their values:

    S = alpha * R(H_norm) + (1 - alpha) * R(D)  (S = R(H_norm) where D is NaN: no ROI)

R(x) of a row is (rank - 1) / (n - 1), the rank of its value among the n scored
rows that have a finite value of that term (1 = smallest; equal values share
their average rank), so each term is spread evenly over [0, 1] whatever its
scale. A term with a single finite value, or whose finite values are all
equal, maps to 0.5 (the average rank of a full tie). The scored rows are those
with a finite H_norm and a D that is finite or NaN; the others (rows in error,
or an infinite D, or rows left out by `valid`) get NaN, take no rank, and
never shift another row's rank. Output is float64.

Why "rank": the two terms rarely share a scale. In `egal demo` normalised entropy
spreads several times as widely as misalignment (the README's "Mixing the two terms"
gives the figures), so with "raw" at alpha = 0.5 the entropy term sets most of the
order; ranks give each term the weight alpha says.
Ranks depend on the whole set scored together: a row's rank score changes when
other rows are added, so `egal score --combine rank` computes it once every
row of the pool is scored.
"""
from __future__ import annotations

import numpy as np

from ._checks import check_alpha, check_choice

METHODS = ("raw", "rank")


def combine_scores(entropy_norm, misalignment, alpha, method: str = "raw", *, valid=None) -> np.ndarray:
    """[N] scores from [N] normalised entropies and [N] misalignments (NaN: no ROI); see the module docstring.

    valid: optional [N] bool, the rows to score; the others get NaN and take no rank. Pass
    np.isfinite(result.score) with a ScoreResult: a sample whose Grad-CAM inputs were not
    finite has a NaN misalignment too, and would otherwise pass for a row without ROI.
    """
    check_choice(method, "method", METHODS)
    alpha = check_alpha(alpha)
    h = _vector("entropy_norm", entropy_norm)
    d = _vector("misalignment", misalignment)
    if h.shape != d.shape:
        raise ValueError(f"entropy_norm has {h.shape[0]} entries but misalignment has {d.shape[0]}")
    # The scorer takes alpha as float32; mixing with the same number keeps "raw" its formula exactly.
    a = float(np.float32(alpha))
    no_roi = np.isnan(d)
    scored = np.isfinite(h) & (np.isfinite(d) | no_roi)  # an infinite D is bad input, not a missing ROI
    if valid is not None:
        valid = np.asarray(valid)
        if valid.dtype != np.bool_ or valid.shape != h.shape:
            raise ValueError(f"valid must be a bool array of shape {h.shape}, got {valid.dtype} {valid.shape}")
        scored &= valid
    if method == "raw":
        out_dtype = np.result_type(h.dtype, d.dtype, np.float32)
        h, d = h.astype(np.float64), d.astype(np.float64)
    else:
        out_dtype = np.float64
        h = _normalised_rank(h, scored)
        d = _normalised_rank(d, scored & ~no_roi)
    with np.errstate(invalid="ignore"):
        score = np.where(no_roi, h, a * h + (1.0 - a) * d)
    score[~scored] = np.nan
    return score.astype(out_dtype, copy=False)


def _vector(name: str, values) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    return array if array.dtype.kind == "f" else array.astype(np.float64)


def _normalised_rank(values: np.ndarray, use: np.ndarray) -> np.ndarray:
    """(average rank - 1) / (n - 1) over values[use], 0.5 for a full tie (n = 1 included); NaN elsewhere."""
    out = np.full(values.shape, np.nan)
    index = np.flatnonzero(use)
    n = index.size
    if n == 0:
        return out
    v = values[index].astype(np.float64)
    order = np.argsort(v, kind="stable")
    ordered = v[order]
    starts = np.concatenate(([0], np.flatnonzero(ordered[1:] != ordered[:-1]) + 1))
    ends = np.concatenate((starts[1:], [n]))
    average = (starts + ends - 1) / 2.0  # 0-based average rank of each run of equal values
    ranks = np.empty(n)
    ranks[order] = np.repeat(average, ends - starts)
    out[index] = ranks / (n - 1) if n > 1 else 0.5
    return out
