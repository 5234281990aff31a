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
