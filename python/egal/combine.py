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
DEFAULT_ALPHA = 0.5  # the weight of entropy_norm when none is given, in every function and command that takes one


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
    if method == "rank":
        return _mixed_ranks(h, d, a, scored, no_roi)
    out_dtype = np.result_type(h.dtype, d.dtype, np.float32)
    h, d = h.astype(np.float64), d.astype(np.float64)
    with np.errstate(invalid="ignore"):
        score = np.where(no_roi, h, a * h + (1.0 - a) * d)
    score[~scored] = np.nan
    return score.astype(out_dtype, copy=False)


def _mixed_ranks(h: np.ndarray, d: np.ndarray, alpha: float, scored: np.ndarray, no_roi: np.ndarray) -> np.ndarray:
    """The "rank" mix, computed exactly: every rank score is an integer over one common denominator, rounded to
    float64 once. Rows whose mixes are equal (ranks of 3 and 5 against 4 and 4 at alpha 0.5, say) then get the
    same float, and the documented tie-break by id orders them, not the rounding of two float expressions."""
    h_twice, h_half = _twice_ranks(h, scored)  # R(H) = h_twice / h_half
    d_twice, d_half = _twice_ranks(d, scored & ~no_roi)
    p, q = alpha.as_integer_ratio()  # alpha = p / q exactly (a float32)
    # S = (p * R(H) + (q - p) * R(D)) / q over the denominator q * h_half * d_half; without ROI, S = R(H). No
    # numerator exceeds the denominator: below 2^53 both are exact in int64 and float64, and one float division
    # rounds once (alpha 0.5 on any pool); above, Python's integers keep them exact.
    denominator = q * h_half * d_half
    kind = np.int64 if denominator < 2**53 else object
    numerator = np.where(no_roi, h_twice.astype(kind) * (q * d_half),
                         h_twice.astype(kind) * (p * d_half) + d_twice.astype(kind) * ((q - p) * h_half))
    if kind is np.int64:
        score = numerator.astype(np.float64) / float(denominator)
    else:
        score = np.array([n / denominator for n in numerator.tolist()], dtype=np.float64)
    score[~scored] = np.nan
    return score


def _vector(name: str, values) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-d, got shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    return array if array.dtype.kind == "f" else array.astype(np.float64)


def _twice_ranks(values: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, int]:
    """(twice each value's 0-based average rank among values[use] (int64; 0 elsewhere), 2 (n - 1)): the normalised
    rank (average rank - 1) / (n - 1) as an integer ratio; a single value is 1 / 2 (the 0.5 of a full tie)."""
    out = np.zeros(values.shape, dtype=np.int64)
    index = np.flatnonzero(use)
    n = index.size
    if n <= 1:
        out[index] = 1
        return out, 2
    v = values[index].astype(np.float64)
    order = np.argsort(v, kind="stable")
    ordered = v[order]
    starts = np.concatenate(([0], np.flatnonzero(ordered[1:] != ordered[:-1]) + 1))
    ends = np.concatenate((starts[1:], [n]))
    twice_average = starts + ends - 1  # twice the 0-based average rank of each run of equal values
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.repeat(twice_average, ends - starts)
    out[index] = ranks
    return out, 2 * (n - 1)
