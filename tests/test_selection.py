import numpy as np
import pytest

import egal


def test_top_k_descending():
    assert egal.select_top_k([0.1, 0.9, 0.5, 0.7], ["a", "b", "c", "d"], 2).tolist() == ["b", "d"]


def test_ties_broken_by_id_ascending():
    scores = [0.5, 0.5, 0.9, 0.5]
    ids = ["img_3", "img_1", "img_0", "img_2"]
    assert egal.select_top_k(scores, ids, 3).tolist() == ["img_0", "img_1", "img_2"]
    assert egal.select_top_k(scores, [30, 10, 0, 20], 4).tolist() == [0, 10, 20, 30]


def test_nan_never_selected():
    scores = [np.nan, 0.2, np.nan, 0.1]
    assert egal.select_top_k(scores, ["a", "b", "c", "d"], 4).tolist() == ["b", "d"]
    assert egal.select_top_k([np.nan], ["a"], 1).tolist() == []


def test_k_zero_and_k_beyond_pool():
    assert egal.select_top_k([0.3, 0.1], ["a", "b"], 0).tolist() == []
    assert egal.select_top_k([0.3, 0.1], ["a", "b"], 10).tolist() == ["a", "b"]


def test_order_independent_of_input_order():
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(200), 2)  # many ties
    ids = np.array([f"id{i:04d}" for i in range(200)])
    perm = rng.permutation(200)
    first = egal.select_top_k(scores, ids, 50)
    second = egal.select_top_k(scores[perm], ids[perm], 50)
    assert first.tolist() == second.tolist()


def test_k_must_be_int():
    with pytest.raises(TypeError, match="k must be"):
        egal.select_top_k([0.1], ["a"], 1.5)


# -- select_batch: the rules composed (egal.selection.batch) ----------------------------------------------

from egal.selection import CANDIDATE_FACTOR, SelectionError, ranked_positions, select_batch  # noqa: E402
from egal.selection.cluster import cluster_order  # noqa: E402
from egal.selection.kcenter import kcenter_order  # noqa: E402


def _old_select_top_k(scores, ids, k):
    """egal.select_top_k as it was before selection became a package (commit aeb2269), kept verbatim here
    so that 'diversity none equals today's selection' is checked against the old code itself."""
    scores = np.asarray(scores, dtype=np.float64)
    ids = np.asarray(ids)
    valid = np.flatnonzero(~np.isnan(scores))
    order = np.lexsort((ids[valid], -scores[valid]))
    return ids[valid[order[:k]]]


def tied_pool(n=500, seed=0):
    """Scores rounded to 2 decimals (many ties), some NaN, ids in shuffled order."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(n), 2)
    scores[rng.choice(n, n // 10, replace=False)] = np.nan
    ids = np.array([f"scan_{i:05d}" for i in rng.permutation(n)])
    return scores, ids


@pytest.mark.parametrize("k", [0, 1, 7, 60, 449, 450, 451, 1000])
def test_diversity_none_equals_the_old_top_k_on_a_pool_with_ties(k):
    scores, ids = tied_pool()
    expected = _old_select_top_k(scores, ids, k)
    assert egal.select_top_k(scores, ids, k).tolist() == expected.tolist()
    chosen = select_batch(scores, ids, k)
    assert chosen.ids.tolist() == expected.tolist()
    assert chosen.positions.tolist() == [int(np.flatnonzero(ids == i)[0]) for i in expected]
    assert chosen.selectable == 450 and chosen.shortfall == max(0, k - 450) and chosen.candidates == 0


def test_ranked_positions_is_the_full_order_cut_at_the_limit():
    scores, ids = tied_pool(300, seed=4)
    full = ranked_positions(scores, ids)
    assert ids[full].tolist() == _old_select_top_k(scores, ids, 300).tolist()
    for limit in (1, 2, 17, 100, 269, 270, 271, 500):
        assert ranked_positions(scores, ids, limit).tolist() == full[:limit].tolist()


def test_integer_ids_break_ties_numerically():
    chosen = select_batch([0.5, 0.5, 0.5], [30, 4, 100], 2)
    assert chosen.ids.tolist() == [4, 30]


# -- group caps ---------------------------------------------------------------------------------------------

def grouped_pool(n=400, groups=23, seed=1):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(n), 2)
    scores[rng.choice(n, 20, replace=False)] = np.nan
    ids = np.array([f"s{i:04d}" for i in range(n)])
    patient = np.array([f"patient_{g:02d}" for g in rng.integers(0, groups, n)], dtype=object)
    return scores, ids, patient


@pytest.mark.parametrize("per_group", [1, 2, 5])
@pytest.mark.parametrize("k", [10, 60, 400])
def test_group_caps_hold_and_take_each_groups_best_first(per_group, k):
    scores, ids, patient = grouped_pool()
    chosen = select_batch(scores, ids, k, groups=patient, per_group=per_group)
    taken = set(chosen.ids.tolist())
    counts = {}
    for g in patient[chosen.positions]:
        counts[g] = counts.get(g, 0) + 1
    assert max(counts.values()) <= per_group
    order = _old_select_top_k(scores, ids, len(ids)).tolist()  # the ranked order of the valid rows
    # Walking the ranked order: a row is skipped only when its group is full or the batch is.
    seen = {}
    for i in order:
        g = patient[int(i[1:])]
        if i in taken:
            seen[g] = seen.get(g, 0) + 1
        elif seen.get(g, 0) < per_group:
            assert len(taken) == k and order.index(i) > max(order.index(t) for t in taken), i
    assert chosen.ids.tolist() == [i for i in order if i in taken]  # listed best first
    valid_counts = {}
    for g in patient[~np.isnan(scores)]:
        valid_counts[g] = valid_counts.get(g, 0) + 1
    assert chosen.selectable == sum(min(c, per_group) for c in valid_counts.values())


def test_k_beyond_what_a_cap_allows_gives_fewer_rows_and_says_how_many():
    scores = [0.9, 0.8, 0.7, 0.6, np.nan]
    chosen = select_batch(scores, list("abcde"), 4, groups=["p", "p", "q", "q", "r"], per_group=1)
    assert chosen.ids.tolist() == ["a", "c"]
    assert (chosen.selectable, chosen.shortfall) == (2, 2)  # 'e' has no valid score: group r has nothing


def test_a_null_group_of_a_selectable_row_is_an_error_naming_the_rows():
    with pytest.raises(SelectionError, match=r"groups is null or blank for 2 row\(s\).*positions 1, 3"):
        select_batch([0.9, 0.8, 0.7, 0.6], list("abcd"), 2, groups=["p", None, "q", float("nan")], per_group=1)
    # a row that can never be selected (NaN score) may lack a group
    chosen = select_batch([0.9, np.nan], ["a", "b"], 2, groups=["p", None], per_group=1)
    assert chosen.ids.tolist() == ["a"]


@pytest.mark.parametrize("per_group", [0, -1, 1.5, True])
def test_per_group_below_one_is_refused(per_group):
    with pytest.raises(SelectionError, match="per_group must be a positive integer"):
        select_batch([0.1], ["a"], 1, groups=["p"], per_group=per_group)


def test_groups_and_per_group_come_together():
    with pytest.raises(SelectionError, match="per_group is needed with groups"):
        select_batch([0.1], ["a"], 1, groups=["p"])
    with pytest.raises(SelectionError, match="groups is needed with per_group"):
        select_batch([0.1], ["a"], 1, per_group=2)


# -- diversity ----------------------------------------------------------------------------------------------

def clustered_embeddings(per_cluster=12, clusters=5, dim=16, seed=2):
    """`clusters` tight blobs far apart; every row of blob 0 scores above every other row, so the plain
    top k is all near-copies from one blob."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 20
    labels = np.repeat(np.arange(clusters), per_cluster)
    x = centres[labels] + rng.normal(size=(labels.size, dim)) * 0.05
    scores = 0.5 - 0.05 * labels + rng.random(labels.size) * 0.01  # blob 0 highest, then blob 1, ...
    ids = np.array([f"img{i:03d}" for i in range(labels.size)])
    return scores, ids, x.astype(np.float32), labels


@pytest.mark.parametrize("method", ["kcenter", "cluster"])
def test_diversity_picks_one_row_from_each_blob_where_top_k_picks_one_blob(method):
    scores, ids, x, labels = clustered_embeddings()
    plain = select_batch(scores, ids, 5)
    assert set(labels[plain.positions]) == {0}
    chosen = select_batch(scores, ids, 5, diversity=method, embeddings=x, candidate_factor=12)
    assert sorted(labels[chosen.positions]) == [0, 1, 2, 3, 4]
    for blob in range(5):  # the best-scored row of each blob
        members = np.flatnonzero(labels == blob)
        assert members[np.argmax(scores[members])] in chosen.positions
    assert chosen.candidates == 60 and chosen.ids.tolist() == [i for i in plain_order(scores, ids) if i in chosen.ids]


def plain_order(scores, ids):
    return _old_select_top_k(scores, ids, len(ids)).tolist()


def test_kcenter_spreads_points_on_a_line_and_leans_towards_scores():
    x = np.array([[0.0], [0.1], [10.0], [5.0], [9.9]], dtype=np.float32)  # candidates best first
    assert kcenter_order(x, 3).tolist() == [0, 2, 3]  # the best, the farthest, then the middle
    # a near-copy of the best row waits: the second pick is the distinct row, though it ranks lower
    assert kcenter_order(np.array([[0.0], [0.0], [1.0], [1.0]], dtype=np.float32), 2).tolist() == [0, 2]
    # weight 1 - i/M: a point twice as far but ranked at the bottom half loses to a nearer better-ranked one
    x = np.array([[0.0], [1.0], [0.5], [0.5], [0.5], [2.1]], dtype=np.float32)
    assert kcenter_order(x, 2).tolist() == [0, 1]  # 1.0 * 5/6 > 2.1 * 1/6


def test_cluster_order_fills_with_second_bests_when_clusters_run_out():
    x = np.array([[0.0], [0.0], [0.0], [5.0], [5.0]], dtype=np.float32)  # two distinct points
    assert sorted(cluster_order(x, 4).tolist()) == [0, 1, 3, 4]  # each cluster's best, then second best


def test_candidates_are_the_top_m_times_k_rows():
    scores, ids, x, labels = clustered_embeddings(per_cluster=40)
    chosen = select_batch(scores, ids, 2, diversity="kcenter", embeddings=x)  # candidates: top 20, all of blob 0
    assert chosen.candidates == CANDIDATE_FACTOR * 2 and set(labels[chosen.positions]) == {0}
    wider = select_batch(scores, ids, 2, diversity="kcenter", embeddings=x, candidate_factor=30)
    assert sorted(labels[wider.positions]) == [0, 1]


@pytest.mark.parametrize("method", ["kcenter", "cluster"])
def test_diverse_selection_is_deterministic_and_ignores_input_order(method):
    rng = np.random.default_rng(5)
    scores, ids = np.round(rng.random(300), 2), np.array([f"r{i:03d}" for i in range(300)])
    x = rng.normal(size=(300, 8)).astype(np.float32)
    first = select_batch(scores, ids, 20, diversity=method, embeddings=x)
    assert select_batch(scores, ids, 20, diversity=method, embeddings=x).ids.tolist() == first.ids.tolist()
    perm = rng.permutation(300)
    again = select_batch(scores[perm], ids[perm], 20, diversity=method, embeddings=x[perm])
    assert again.ids.tolist() == first.ids.tolist()


def test_caps_and_diversity_together_keep_the_cap():
    scores, ids, x, labels = clustered_embeddings(per_cluster=10)
    patients = np.array([f"p{i // 2}" for i in range(len(ids))], dtype=object)  # two slices per patient
    chosen = select_batch(scores, ids, 8, diversity="kcenter", embeddings=x, groups=patients, per_group=1)
    assert len(set(patients[chosen.positions])) == 8 and len(chosen.ids) == 8


# -- bad input ----------------------------------------------------------------------------------------------

def test_diversity_without_embeddings_is_refused():
    with pytest.raises(SelectionError, match="embeddings are needed by diversity='kcenter'"):
        select_batch([0.1, 0.2], ["a", "b"], 1, diversity="kcenter")


def test_embeddings_with_nan_are_refused_naming_the_rows():
    x = np.zeros((4, 3), dtype=np.float32)
    x[2, 1] = np.nan
    with pytest.raises(SelectionError, match=r"NaN or Inf for 1 candidate row\(s\) \('c'\)"):
        select_batch([0.4, 0.3, 0.2, 0.1], list("abcd"), 2, diversity="cluster", embeddings=x)
    # a NaN embedding outside the candidates is never read
    x[2, 1], x[3, 0] = 0.0, np.inf
    chosen = select_batch([0.4, 0.3, 0.2, 0.1], list("abcd"), 1, diversity="cluster", embeddings=x, candidate_factor=2)
    assert chosen.ids.tolist() == ["a"]


@pytest.mark.parametrize("bad, message", [
    (np.zeros((3, 2)), r"embeddings must be \[N, D\] with N = 4"),
    (np.zeros(4), r"embeddings must be \[N, D\]"),
    (np.array([["a"]] * 4), "floating-point"),
])
def test_embeddings_of_the_wrong_shape_or_type_are_refused(bad, message):
    with pytest.raises(SelectionError, match=message):
        select_batch([0.4, 0.3, 0.2, 0.1], list("abcd"), 2, diversity="kcenter", embeddings=bad)


@pytest.mark.parametrize("kwargs, message", [
    (dict(diversity="badge"), "diversity must be one of none, kcenter, cluster"),
    (dict(k=-1), "k must be a non-negative integer"),
    (dict(candidate_factor=0), "candidate_factor must be a positive integer"),
    (dict(diversity="none", seed=-1), "seed must be a non-negative integer"),  # numpy's bare message, at k-means
])
def test_bad_options_are_user_errors_naming_the_argument(kwargs, message):
    arguments = dict(k=1) | kwargs
    k = arguments.pop("k")
    with pytest.raises(SelectionError, match=message) as raised:
        select_batch([0.1], ["a"], k, **arguments)
    assert isinstance(raised.value, egal.errors.EgalError)


def test_duplicate_ids_are_refused():
    with pytest.raises(SelectionError, match="ids must be unique"):
        select_batch([0.1, 0.2], ["a", "a"], 1)


def test_an_infinite_score_is_refused_not_ranked_first():
    with pytest.raises(SelectionError, match="1 are infinite, first for id 'b'"):
        select_batch([0.1, np.inf, 0.3], ["a", "b", "c"], 1)
    with pytest.raises(ValueError, match="1 are infinite, first for id 'b'"):
        egal.select_top_k([0.1, -np.inf, 0.3], ["a", "b", "c"], 1)


def _exact_kcenter(x, k):
    """Greedy score-aware k-center in float64 with distances measured directly (the rule of kcenter.py)."""
    x = np.asarray(x, dtype=np.float64)
    weight = 1.0 - np.arange(len(x)) / len(x)
    picks, nearest = [0], np.linalg.norm(x - x[0], axis=1)
    while len(picks) < k:
        gain = weight * nearest
        gain[picks] = -np.inf
        picks.append(int(np.argmax(gain)))
        nearest = np.minimum(nearest, np.linalg.norm(x - x[picks[-1]], axis=1))
    return picks


@pytest.mark.parametrize("offset", [0.0, 10.0, 1000.0])
def test_kcenter_follows_the_exact_rule_wherever_the_points_lie(offset):
    # Points much nearer each other than the origin were merged (a tolerance relative to their norms), so a
    # batch changed when every embedding moved by one vector, and k-center became the plain top k.
    for seed in range(40):
        rng = np.random.default_rng(seed)
        m, d = int(rng.integers(5, 120)), int(rng.integers(1, 24))
        x = rng.normal(size=(m, d)) * 0.05
        if seed % 3 == 0:
            x[rng.integers(0, m, m // 2)] = x[0]  # exact copies wait until nothing else is left
        k, given = int(rng.integers(1, m)), (x + offset).astype(np.float32)
        assert kcenter_order(given, k).tolist() == _exact_kcenter(given, k), seed


@pytest.mark.parametrize("method", ["kcenter", "cluster"])
def test_a_diverse_batch_does_not_change_when_the_embeddings_are_moved_or_scaled(method):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(300, 16)) * 0.2).astype(np.float32)
    scores, ids = rng.random(300), np.array([f"r{i:03d}" for i in range(300)])
    batch = lambda e: select_batch(scores, ids, 20, diversity=method, embeddings=e).ids.tolist()  # noqa: E731
    base = batch(x)
    assert base != select_batch(scores, ids, 20).ids.tolist()
    assert batch(x + np.float32(30)) == base
    assert batch(x * np.float32(1e4)) == base


def test_embeddings_of_any_array_type_and_any_float_range():
    import warnings

    rng = np.random.default_rng(0)
    scores, ids, x = rng.random(50), np.array([f"r{i:02d}" for i in range(50)]), rng.normal(size=(50, 8))
    want = select_batch(scores, ids, 5, diversity="kcenter", embeddings=x).ids.tolist()
    torch = pytest.importorskip("torch")
    # Tensors and DataFrames have a .take of their own: they were called as if they were an embeddings file.
    assert select_batch(scores, ids, 5, diversity="kcenter", embeddings=torch.from_numpy(x)).ids.tolist() == want
    pandas = pytest.importorskip("pandas")
    assert select_batch(scores, ids, 5, diversity="kcenter", embeddings=pandas.DataFrame(x)).ids.tolist() == want
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1e20 overflowed float32 squares: top k, with only a RuntimeWarning
        assert select_batch(scores, ids, 5, diversity="kcenter", embeddings=x * 1e20).ids.tolist() == want
    with pytest.raises(SelectionError, match=r"beyond float32's range \(3.4e38\) for 1 row"):
        select_batch(scores, ids, 5, diversity="kcenter", embeddings=np.where(np.arange(50)[:, None] == 7, 1e39, x))
    with pytest.raises(SelectionError, match="cannot be read as a numpy array"):
        select_batch(scores, ids, 5, diversity="kcenter", embeddings=torch.ones(50, 3, requires_grad=True))


def test_groups_of_another_length_than_the_scores_are_refused():
    with pytest.raises(SelectionError, match="groups has 1 entries but scores has 3"):
        select_batch([0.5, 0.4, 0.3], ["a", "b", "c"], 2, groups=["p"], per_group=1)


def test_k_means_assigns_tight_clusters_by_their_true_distances():
    # The Lloyd step compared |c|^2 - 2 x.c in float32, whose rounding swamped distances within tight
    # clusters far from the mean (adjacent slices of one scan): 6 to 12 of 30 rows differed from exact k-means.
    import egal.selection.cluster as cluster

    def exact_nearest(x, centres, block=None):
        return np.array([np.argmin(((centres - row) ** 2).sum(1)) for row in x])

    for seed in range(3):
        rng = np.random.default_rng(seed)
        blobs = rng.normal(size=(2, 64))
        x = (blobs[rng.integers(0, 2, 600)] + rng.normal(size=(600, 64)) * 0.002).astype(np.float32)
        got = cluster_order(x, 30).tolist()
        shipped, cluster.nearest_centres = cluster.nearest_centres, exact_nearest
        try:
            assert sorted(got) == sorted(cluster_order(x, 30).tolist()), seed
        finally:
            cluster.nearest_centres = shipped


@pytest.mark.parametrize("method", ["kcenter", "cluster"])
def test_embeddings_near_the_float32_limit_give_the_batch_of_the_same_points_scaled_down(method):
    import warnings

    rng = np.random.default_rng(4)
    x = rng.uniform(-0.5, 0.5, size=(50, 4))
    x[:45, 0], x[45:, 0] = -1.0, 1.0  # two far groups along one axis: centring subtracts values near the limit
    scores, ids = rng.random(50), np.array([f"r{i:02d}" for i in range(50)])
    small = select_batch(scores, ids, 5, diversity=method, embeddings=(x * 3e8).astype(np.float32)).ids.tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the float32 centring overflowed: NaN probabilities, a traceback
        huge = select_batch(scores, ids, 5, diversity=method, embeddings=(x * 3.3e38).astype(np.float32))
    assert huge.ids.tolist() == small


def test_k_means_assigns_one_dimensional_near_ties_exactly():
    # In one dimension |c|^2 - 2 x.c rounds at about 1e-16 of the norms, and 72 of 600 rows went to a centre
    # that was not the nearest when sub-clusters lie 1e-7 apart near -1 and 1: such rows are measured directly.
    from egal.selection.distances import for_distances, nearest_centres

    rng = np.random.default_rng(11)
    x = np.concatenate([-1 + np.arange(300) * 1.2e-7, 1 + np.arange(300) * 1.2e-7])[rng.permutation(600), None]
    x = for_distances(x.astype(np.float32))
    centres = x[rng.choice(600, 30, replace=False)]
    exact = np.argmin(((x[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    got = nearest_centres(x, centres)
    nearest = ((x[:, None, 0] - centres[None, :, 0]) ** 2)
    assert np.array_equal(nearest[np.arange(600), got], nearest[np.arange(600), exact])  # ties may go either way


def test_scores_and_ids_of_every_kind_or_a_clear_error():
    # bfloat16 tensors raised torch's "unsupported ScalarType", None "must be 1-d", text was parsed as numbers,
    # and mixed ids were compared as text.
    torch = pytest.importorskip("torch")
    scores = torch.tensor([0.1, 0.9, 0.5], dtype=torch.bfloat16)
    assert egal.select_top_k(scores, ["a", "b", "c"], 2).tolist() == ["b", "c"]
    assert select_batch(scores, ["a", "b", "c"], 2).ids.tolist() == ["b", "c"]
    for select in (egal.select_top_k, select_batch):
        with pytest.raises(TypeError, match="scores must be an array of numbers, got None"):
            select(None, ["a"], 1)
        with pytest.raises(TypeError, match="scores must be numbers, got dtype <U3"):
            select(["0.5", "0.3"], ["a", "b"], 1)
        with pytest.raises(TypeError, match="ids must be all text or all integers, got integer, text"):
            select([0.5, 0.3], ["a", 1], 1)
