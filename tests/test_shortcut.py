"""The shortcut benchmark: markers outside the ROI, the test set untouched, the marker test copy, determinism."""
import csv

import numpy as np
import pytest
from scipy import stats

from egal.loop import ExperimentConfig, run_simulation
from egal.loop.config import DataConfig, LoopConfig
from egal.loop.report import load_runs, marked_selection_table
from egal.loop.shortcut import ShortcutConfig, build_shortcut, find_position, marker_patch
from egal.train import TrainConfig
from lesion_data import CLASSES, lesion_arrays, lesion_dataset

HALF_BRIGHT = ShortcutConfig(target_class="bright", share=0.5)


def shortcut(config=HALF_BRIGHT, n=60, size=64):
    images, masks, labels = lesion_arrays(n, size, seed=2)
    pool, test = np.arange(0, 45), np.arange(45, n)
    return images, masks, labels, pool, test, build_shortcut(images, masks, labels, CLASSES, pool, test, config)


def changed_rows(a, b):
    return np.flatnonzero((a != b).reshape(len(a), -1).any(axis=1))


@pytest.mark.parametrize("marker", ["square", "text"])
def test_markers_land_outside_the_roi_in_the_chosen_share_of_the_target_class(marker):
    config = ShortcutConfig(target_class="bright", share=0.5, marker=marker, margin=0.03)
    images, masks, labels, pool, test, data = shortcut(config)
    changed = changed_rows(images, data.images)
    np.testing.assert_array_equal(changed, np.flatnonzero(data.marked))
    target_pool = pool[labels[pool] == 2]
    assert set(changed) <= set(target_pool)
    assert len(changed) + data.unplaced == round(0.5 * len(target_pool))
    margin = round(0.03 * 64)
    for row in changed:
        diff = (images[row] != data.images[row]).any(axis=0)  # [H, W] pixels the marker touched
        ys, xs = np.nonzero(diff)
        box = masks[row, max(0, ys.min() - margin):ys.max() + 1 + margin,
                    max(0, xs.min() - margin):xs.max() + 1 + margin]
        assert not box.any(), f"row {row}: marker within {margin} px of the ROI"
        assert data.images[row].max() == pytest.approx(1.0)


def test_test_rows_stay_clean_and_the_marker_test_copy_marks_the_other_classes():
    images, masks, labels, pool, test, data = shortcut()
    np.testing.assert_array_equal(data.images[test], images[test])
    marked_test = changed_rows(images[test], data.marker_test_images)
    np.testing.assert_array_equal(marked_test, np.flatnonzero(data.marker_test_marked))
    assert len(marked_test) > 0 and (labels[test][marked_test] != 2).all()
    assert data.target == 2


def test_the_benchmark_is_deterministic_and_depends_on_its_seed():
    a = shortcut()[-1]
    b = shortcut()[-1]
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.marker_test_images, b.marker_test_images)
    c = shortcut(ShortcutConfig(target_class="bright", share=0.5, seed=1))[-1]
    assert not np.array_equal(a.images, c.images)


def test_no_room_outside_the_roi_leaves_the_image_unmarked():
    mask = np.ones((32, 32), np.uint8)
    assert find_position(mask, 4, 1, np.random.default_rng(0)) is None
    mask[:8, :8] = 0
    assert find_position(mask, 4, 1, np.random.default_rng(0)) == (1, 1)


def test_text_marker_is_a_letter_not_a_block():
    patch = marker_patch("text", 24)
    assert 0.05 < (patch > 0.5).mean() < 0.6


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="marker"):
        ShortcutConfig(target_class="x", marker="circle")
    with pytest.raises(ValueError, match="share"):
        ShortcutConfig(target_class="x", share=0)
    images, masks, labels = lesion_arrays(12, 32)
    with pytest.raises(ValueError, match="not a class"):
        build_shortcut(images, masks, labels, CLASSES, np.arange(6), np.arange(6, 12),
                       ShortcutConfig(target_class="huge"))


def test_simulation_reports_marker_accuracy_and_the_marked_share_selected(tmp_path):
    config = ExperimentConfig(
        DataConfig(path="unused", group_column="g", test_fraction=0.25),
        TrainConfig(architecture="tiny_cnn", input_size=(32, 32), embedding_dim=8, epochs=1, k_shot=3, n_query=3),
        LoopConfig(strategies=("random", "egal"), seeds=(0,), init=24, rounds=2, budget=8),
        ShortcutConfig(target_class="bright", share=0.6))
    run_simulation(config, tmp_path, dataset=lesion_dataset(90, size=32, groups=9), progress=False)
    runs = load_runs(tmp_path)
    assert {r["strategy"] for r in runs} == {"random", "egal_a0.5"}
    for run in runs:
        for entry in run["rounds"]:
            assert 0 <= entry["marker_accuracy"] <= 1 and 0 <= entry["marker_as_target"] <= 1
            if entry["round"] < 2:
                assert 0 <= entry["selected_marked_share"] <= 1
                assert 0 < entry["unlabelled_marked_share"] < 1
    summary = (tmp_path / "summary.md").read_text()
    assert "marker" in summary and "| egal_a0.5 | 1 |" in summary  # the marked share of all selections, per seed
    with open(tmp_path / "paired.csv") as f:
        assert {r["kind"] for r in csv.DictReader(f) if r["metric"] == "marker_accuracy"} == {"final", "aulc"}
    assert "marked share of all selections (%)" in (tmp_path / "report.html").read_text()


def test_the_marked_share_of_all_selections_weighs_rounds_by_their_size_and_pairs_seeds():
    def run(strategy, seed, shares, sizes=(10, 10)):
        rounds = [{"round": r, "labels": 20 + 10 * r, "selected": ["x"] * n, "selected_marked_share": share,
                   "unlabelled_marked_share": 0.2} for r, (share, n) in enumerate(zip(shares, sizes, strict=True))]
        rounds.append({"round": len(shares), "labels": 20 + 10 * len(shares), "selected": []})  # the last round
        return {"strategy": strategy, "seed": seed, "rounds": rounds}

    runs = [run("random", 0, (0.2, 0.2)), run("random", 1, (0.1, 0.3)),
            run("egal_a0.5", 0, (0.5, 0.0), sizes=(30, 10)), run("egal_a0.5", 1, (0.4, 0.4))]
    table = marked_selection_table(runs)
    # egal seed 0: (0.5 * 30 + 0) / 40 = 0.375, seed 1: 0.4; random 0.2 and 0.2: differences 0.175 and 0.2
    assert "| random | 2 | 20.0 ± 0.0 | 20.0 |  |" in table
    half_width = stats.t.ppf(0.975, 1) * np.std([0.175, 0.2], ddof=1) / np.sqrt(2)
    assert (f"| egal_a0.5 | 2 | 38.8 ± 1.8 | 20.0 | +18.8 [{100 * (0.1875 - half_width):+.1f}, "
            f"{100 * (0.1875 + half_width):+.1f}] (n = 2) |") in table
