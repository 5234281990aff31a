"""egal.combine.combine_scores: docs/scoring.md's mix ("raw") and the mix of normalised ranks ("rank")."""
import numpy as np
import pytest

import egal
from egal.combine import combine_scores

NAN = np.nan


def naive_normalised_rank(values, use):
    """(average rank - 1) / (n - 1) by counting, over values[use]; 0.5 when n == 1; NaN elsewhere."""
    pool = [v for v, u in zip(values, use, strict=True) if u]
    n = len(pool)
    out = []
    for v, u in zip(values, use, strict=True):
        if not u:
            out.append(NAN)
            continue
        below, equal = sum(p < v for p in pool), sum(p == v for p in pool)
        rank = below + (equal + 1) / 2  # 1-based average rank
        out.append(0.5 if n == 1 else (rank - 1) / (n - 1))
    return np.array(out)


def test_rank_on_known_values():
    h = np.array([0.1, 0.3, 0.2, 0.4])
    d = np.array([0.97, 0.90, 0.95, 0.92])
    # ranks of h: 1, 3, 2, 4 -> 0, 2/3, 1/3, 1; ranks of d: 4, 1, 3, 2 -> 1, 0, 2/3, 1/3
    np.testing.assert_allclose(combine_scores(h, d, 0.5, "rank"), [0.5, 1 / 3, 0.5, 2 / 3])
    np.testing.assert_allclose(combine_scores(h, d, 1.0, "rank"), [0, 2 / 3, 1 / 3, 1])
    np.testing.assert_allclose(combine_scores(h, d, 0.0, "rank"), [1, 0, 2 / 3, 1 / 3])
    np.testing.assert_allclose(combine_scores(h, d, 0.25, "rank"), 0.25 * np.array([0, 2, 1, 3]) / 3
                               + 0.75 * np.array([3, 0, 2, 1]) / 3)


def test_rank_is_scale_free():
    rng = np.random.default_rng(3)
    h, d = rng.random(50), rng.random(50)
    # Squeezing a term into a narrow band (as misalignment is in egal demo) changes nothing.
    assert np.array_equal(combine_scores(h, d, 0.5, "rank"),
                          combine_scores(0.1 + 0.4 * h, 0.89 + 0.08 * d, 0.5, "rank"))
    # ... while with "raw" the wide term decides nearly alone.
    raw = combine_scores(0.1 + 0.4 * h, 0.89 + 0.08 * d, 0.5, "raw")
    assert np.corrcoef(raw, h)[0, 1] > 0.95


def test_ties_share_their_average_rank():
    h = np.array([0.5, 0.2, 0.5, 0.5, 0.9])
    d = np.array([0.3, 0.3, 0.3, 0.3, 0.3])  # all tied: 0.5 each
    # h ranks: 0.2 -> 1; the three 0.5 -> 3 each; 0.9 -> 5
    np.testing.assert_allclose(combine_scores(h, d, 1.0, "rank"), [0.5, 0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(combine_scores(h, d, 0.0, "rank"), [0.5] * 5)


def test_rows_without_roi_get_the_entropy_term_alone():
    h = np.array([0.1, 0.9, 0.5, 0.3])
    d = np.array([0.8, NAN, 0.2, NAN])
    got = combine_scores(h, d, 0.3, "rank")
    r_h = np.array([0, 1, 2 / 3, 1 / 3])  # h over all four rows
    r_d = {0: 1.0, 2: 0.0}  # d over the two rows with ROI
    np.testing.assert_allclose(got, [0.3 * r_h[0] + 0.7 * r_d[0], r_h[1], 0.3 * r_h[2] + 0.7 * r_d[2], r_h[3]])
    np.testing.assert_allclose(combine_scores(h, d, 0.3, "raw"),
                               [0.3 * 0.1 + 0.7 * 0.8, 0.9, 0.3 * 0.5 + 0.7 * 0.2, 0.3], rtol=1e-7)


def test_rows_in_error_are_nan_and_shift_no_rank():
    h = np.array([0.1, NAN, 0.5, 0.3, 0.7])
    d = np.array([0.8, 0.0, 0.2, np.inf, 0.6])  # row 1: H NaN (an error row); row 3: D infinite (bad input)
    got = combine_scores(h, d, 0.5, "rank")
    assert np.isnan(got[[1, 3]]).all()
    kept = combine_scores(h[[0, 2, 4]], d[[0, 2, 4]], 0.5, "rank")
    np.testing.assert_array_equal(got[[0, 2, 4]], kept)
    assert np.isnan(combine_scores(h, d, 0.5, "raw")[[1, 3]]).all()
    valid = np.array([True, True, True, True, False])
    assert np.isnan(combine_scores(h, d, 0.5, "rank", valid=valid)[4])
    np.testing.assert_array_equal(combine_scores(h, d, 0.5, "rank", valid=valid)[[0, 2]],
                                  combine_scores(h[[0, 2]], d[[0, 2]], 0.5, "rank"))


def test_a_single_finite_value_maps_to_one_half():
    np.testing.assert_allclose(combine_scores(np.array([0.2]), np.array([0.9]), 0.5, "rank"), [0.5])
    got = combine_scores(np.array([0.2, 0.4, NAN]), np.array([NAN, 0.9, 0.1]), 0.5, "rank")
    np.testing.assert_allclose(got[:2], [0.0, 0.5 * 1.0 + 0.5 * 0.5])
    assert np.isnan(got[2])
    assert combine_scores(np.array([]), np.array([]), 0.5, "rank").shape == (0,)


def test_rank_against_counting_on_random_data_with_ties_and_gaps():
    rng = np.random.default_rng(11)
    h = rng.integers(0, 12, 300) / 11.0  # many ties
    d = rng.integers(0, 9, 300) / 8.0
    h[rng.random(300) < 0.05] = NAN
    d[rng.random(300) < 0.2] = NAN
    scored = ~np.isnan(h)
    r_h = naive_normalised_rank(h, scored)
    r_d = naive_normalised_rank(d, scored & ~np.isnan(d))
    a = float(np.float32(0.4))  # alpha as the scorer takes it, for both methods
    expected = np.where(np.isnan(d), r_h, a * r_h + (1 - a) * r_d)
    np.testing.assert_allclose(combine_scores(h, d, 0.4, "rank"), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.5, 0.25, 0.3])
def test_rank_scores_that_are_equal_are_one_float_so_ties_go_by_id(alpha):
    # Ranks 3 and 5 against 4 and 4 mix to the same score at alpha 0.5; computed as two float expressions they
    # differed in the last bit, and rounding, not the id, ordered 30 of 600 rows (docs/scoring.md: ties by id).
    from fractions import Fraction

    from egal import select_top_k

    rng = np.random.default_rng(2)
    h, d = rng.permutation(600) / 600.0, rng.permutation(600) / 600.0
    d[rng.random(600) < 0.1] = NAN  # rows without ROI mix with the others over one denominator
    got = combine_scores(h, d, alpha, "rank")
    a = Fraction(float(np.float32(alpha)))
    rank = lambda v, use: {i: Fraction(int((v[use] < v[i]).sum()), int(use.sum()) - 1) for i in np.flatnonzero(use)}  # noqa: E731
    r_h, r_d = rank(h, ~np.isnan(h)), rank(d, ~np.isnan(d))
    exact = [r_h[i] if np.isnan(d[i]) else a * r_h[i] + (1 - a) * r_d[i] for i in range(600)]
    for i in range(600):
        assert got[i] == float(exact[i])  # the exact mix, rounded once
    ids = np.array([f"img{i:04d}" for i in range(600)])
    expected = sorted(range(600), key=lambda i: (-exact[i], ids[i]))
    assert select_top_k(got, ids, 600).tolist() == ids[expected].tolist()


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5, 0.77, 1.0])
def test_raw_is_the_fused_scorers_score(alpha):
    rng = np.random.default_rng(5)
    B, K, h, w = 512, 8, 7, 7
    activations = rng.random((B, K, h, w), dtype=np.float32)
    gradients = rng.standard_normal((B, K, h, w), dtype=np.float32)
    logits = (3 * rng.standard_normal((B, 3))).astype(np.float32)
    masks = np.zeros((B, 56, 56), np.uint8)
    masks[:, 10:30, 15:40] = 1
    masks[::7] = 0  # rows without ROI
    activations[5] = np.nan  # a bad row: NaN score
    result = egal.score_batch(activations, logits, masks, gradients=gradients, alpha=alpha)
    got = combine_scores(result.entropy_norm, result.misalignment, alpha, "raw", valid=np.isfinite(result.score))
    assert got.dtype == result.score.dtype == np.float32
    nan = np.isnan(result.score)
    assert nan[5] and np.array_equal(np.isnan(got), nan)
    no_roi = np.isnan(result.misalignment) & ~nan
    assert no_roi.sum() >= 70 and np.array_equal(got[no_roi], result.score[no_roi])  # bit for bit
    if alpha in (0.0, 1.0):
        assert np.array_equal(got[~nan], result.score[~nan])
    # The scorer mixes its unrounded float64 terms, this function their float32 roundings:
    # at most one unit in the last place apart.
    assert np.all(np.abs(got[~nan].view(np.int32) - result.score[~nan].view(np.int32)) <= 1)


def test_raw_is_the_formula_in_float64():
    h, d = np.array([0.1, 0.6, 0.35]), np.array([0.9, NAN, 0.5])
    alpha = float(np.float32(0.3))  # the scorer's alpha is float32
    got = combine_scores(h, d, 0.3)
    assert got.dtype == np.float64
    assert got.tolist() == [alpha * 0.1 + (1 - alpha) * 0.9, 0.6, alpha * 0.35 + (1 - alpha) * 0.5]


def test_bad_arguments_are_refused_by_name():
    h, d = np.zeros(3), np.zeros(3)
    with pytest.raises(ValueError, match="method"):
        combine_scores(h, d, 0.5, "minmax")
    with pytest.raises(ValueError, match="alpha"):
        combine_scores(h, d, 1.5)
    with pytest.raises(ValueError, match="misalignment has 2"):
        combine_scores(h, np.zeros(2), 0.5)
    with pytest.raises(ValueError, match="1-d"):
        combine_scores(np.zeros((2, 2)), np.zeros((2, 2)), 0.5)
    with pytest.raises(ValueError, match="valid"):
        combine_scores(h, d, 0.5, valid=np.ones(2, bool))


def test_exported_at_the_top_level():
    assert egal.combine_scores is combine_scores


def test_the_exact_rank_mix_is_the_same_on_its_fast_and_its_big_integer_path(monkeypatch):
    # Below 2^53 the common denominator fits int64 and float64 (alpha 0.5 on any pool); above, Python integers.
    import egal.combine as combine

    rng = np.random.default_rng(9)
    h, d = rng.random(400), rng.random(400)
    d[::6] = NAN
    for alpha in (0.5, 0.3, 1e-30):
        fast = combine_scores(h, d, alpha, "rank")
        monkeypatch.setattr(combine, "_twice_ranks", lambda v, use, real=combine._twice_ranks: (
            real(v, use)[0] * 2**40, real(v, use)[1] * 2**40))  # the same ratios over a huge denominator
        big = combine_scores(h, d, alpha, "rank")
        monkeypatch.undo()
        assert np.array_equal(fast, big, equal_nan=True), alpha
