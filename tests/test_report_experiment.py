"""The experiment page: egal simulate records the Grad-CAM of fixed test images and writes report.html; egal report
--experiment rebuilds the same page from the folder's files; an older folder says the grid was not recorded."""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from egal.cli import main
from egal.errors import EgalError
from egal.loop import run_simulation
from egal.loop.config import DataConfig
from egal.loop.report import load_runs
from egal.loop.scoring import score_in_batches
from egal.loop.stats import paired_differences
from egal.report import experiment_report, load_cam_grid
from egal.report.cam_grid import PER_CLASS, CamGridRecorder
from lesion_data import lesion_dataset
from test_loop import tiny_experiment

torch.set_num_threads(1)
STRATEGIES = ("random", "egal")
ROUNDS = 2


def tiny_simulation(out) -> dict:
    """Two strategies, two seeds, two rounds on a small synthetic lesion set, into `out` (a pathlib.Path)."""
    dataset = lesion_dataset(60, 32, seed=3, groups=10)
    config = replace(tiny_experiment(strategies=STRATEGIES, seeds=(0, 1), rounds=ROUNDS),
                     data=DataConfig(path="unused", group_column="patient", test_groups=("patient_0", "patient_1")))
    result = run_simulation(config, out, dataset=dataset, progress=False)
    return {"out": out, "result": result, "dataset": dataset, "config": config}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return tiny_simulation(tmp_path_factory.mktemp("experiment"))


def test_simulate_records_the_grid_for_the_first_seed(experiment):
    grid = load_cam_grid(experiment["out"])
    dataset = experiment["dataset"]
    classes = len(dataset.classes)
    assert len(grid.ids) == PER_CLASS * classes
    assert [int(v) for v in grid.labels] == sorted(list(range(classes)) * PER_CLASS)
    rows = [list(dataset.ids).index(i) for i in grid.ids]
    assert all(dataset.masks[r].any() for r in rows) and all(dataset.groups[r] in ("patient_0", "patient_1")
                                                             for r in rows)  # test rows with an ROI
    np.testing.assert_array_equal(grid.masks, dataset.masks[rows])
    assert sorted(grid.runs) == ["egal_a0.5", "random"]
    assert sorted(os.listdir(experiment["out"] / "cam_grid")) == ["egal_a0.5__seed0.npz", "images.npz",
                                                                  "random__seed0.npz"]  # seed 0 only
    for run in grid.runs.values():
        assert run.seed == 0 and run.rounds.tolist() == list(range(ROUNDS + 1))
        assert run.labels.tolist() == [12, 18, 24]
        assert run.cams.shape[:2] == (ROUNDS + 1, len(grid.ids)) and run.cams.min() >= 0 and run.cams.max() <= 1
    # Round 0 is the same seed-set model for every strategy; later rounds differ with the selection.
    a, b = grid.runs["random"], grid.runs["egal_a0.5"]
    np.testing.assert_array_equal(a.cams[0], b.cams[0])
    np.testing.assert_array_equal(a.pred[0], b.pred[0])


def test_the_recorder_keeps_the_models_gradcam_with_or_without_a_feature_cache():
    from egal.train import TrainConfig, build_feature_cache, train_model

    dataset = lesion_dataset(40, 32, seed=5)
    config = TrainConfig(architecture="tiny_cnn", head="prototypical", input_size=(32, 32), in_channels=1,
                         embedding_dim=8, epochs=1, k_shot=2, n_query=3, augment=False, seed=0,
                         trainable_from="features.conv3")
    train, test = np.arange(0, 40, 2), np.arange(1, 40, 2)
    model, _ = train_model(dataset.images[train], dataset.masks[train], dataset.labels[train], dataset.classes, config)
    cache = build_feature_cache(model, dataset.images, config.trainable_from, dtype=torch.float32)
    with_cache, plain = (CamGridRecorder("unused", dataset, test, features=f).run("s", 0) for f in (cache, None))
    with_cache.record(0, 20, model)
    plain.record(0, 20, model)
    np.testing.assert_allclose(with_cache.cams[0], plain.cams[0], atol=1e-5)
    rows = [list(dataset.ids).index(i) for i in CamGridRecorder("unused", dataset, test).ids]
    expected = score_in_batches(model, dataset.images[rows], dataset.masks[rows], alpha=0.5, return_cam=True)
    np.testing.assert_allclose(plain.cams[0], expected.cam, atol=1e-6)
    np.testing.assert_array_equal(plain.pred[0], expected.pred)
    assert expected.cam.max() > 0  # a map to compare, not all flat


def test_simulate_writes_the_page_and_egal_report_rebuilds_it_from_the_files(experiment, capsys):
    out = experiment["out"]
    assert experiment["result"]["report"]["report_html"] == str(out / "report.html")
    written = (out / "report.html").read_text()
    os.remove(out / "report.html")
    assert main(["report", "--experiment", str(out)]) == 0
    assert "with the Grad-CAM grid" in capsys.readouterr().out
    assert (out / "report.html").read_text() == written
    grid = written[written.index("id='gradcam-grid'"):]
    images = len(re.findall(r"<img class='grid-image'", grid))
    # a row of images with their ROI, the shared seed-set model, and rounds 1 and R of each strategy
    assert images == 6 * (2 + 2 * len(STRATEGIES))
    for label in ("seed-set model (round 0, 12 labels)", "random after round 1 (18 labels)",
                  "egal_a0.5 after round 2 (24 labels)"):
        assert label in grid


def test_selection_page_options_with_experiment_are_refused_and_a_trailing_slash_keeps_the_title(experiment,
                                                                                                 tmp_path, capsys):
    out = experiment["out"]
    before = (out / "report.html").read_text()
    # --out and --select were ignored without a word, and DIR/report.html rewritten.
    assert main(["report", "--experiment", str(out), "--out", str(tmp_path / "elsewhere"), "--select", "5"]) == 2
    assert "--out, --select are for the selection page" in capsys.readouterr().err
    assert main(["report", "--experiment", str(out), "--select", "5"]) == 2
    assert "--select is for the selection page" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists() and (out / "report.html").read_text() == before
    assert main(["report", "--experiment", f"{out}/", "--overwrite"]) == 0
    assert f"<title>egal experiment: {out.name}</title>" in (out / "report.html").read_text()  # was empty


def test_the_final_table_is_the_paired_statistics(experiment):
    html = (experiment["out"] / "report.html").read_text()
    runs = load_runs(experiment["out"])
    (row,) = paired_differences(runs, "random", "accuracy", "final")
    final = html[html.index("id='final'"):html.index("id='gradcam'")]
    cells = re.search(r"<td>egal_a0.5</td>(.*?)</tr>", final).group(1)
    assert f"{100 * row['mean']:+.1f} [{100 * row['t_low']:+.1f}, {100 * row['t_high']:+.1f}]" in cells
    assert "learning-curves" in html and "data:image/png;base64," in html


def test_an_older_folder_says_the_grid_was_not_recorded(experiment, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(experiment["out"], old)
    shutil.rmtree(old / "cam_grid")
    report = experiment_report(old)
    html = (old / "report.html").read_text()
    assert not report.cam_grid and "Not recorded in this run" in html and "gradcam-grid" not in html


def test_the_shortcut_panels_appear_when_the_benchmark_ran(tmp_path):
    (tmp_path / "runs").mkdir()
    for strategy in ("random", "egal_a0.5"):
        for seed in (0, 1):
            rounds = [{"round": r, "labels": 10 + 5 * r, "accuracy": 0.5 + 0.1 * r + 0.01 * seed,
                       "auc": 0.6, "dice": 0.1, "marker_accuracy": 0.4, "marker_as_target": 0.5,
                       "selected_marked_share": 0.2 if r < 2 else None, "unlabelled_marked_share": 0.25}
                      for r in range(3)]
            record = {"strategy": strategy, "seed": seed, "rounds": rounds, "test_rows": 20, "pool_rows": 80}
            (tmp_path / "runs" / f"{strategy}__seed{seed}.json").write_text(json.dumps(record))
    experiment_report(tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "id='shortcut-panels'" in html and "marker test accuracy (%)" in html
    assert "Not recorded in this run" in html


def test_every_figure_has_axis_labels_with_units(experiment, monkeypatch):
    import matplotlib.figure

    figures = []
    real = matplotlib.figure.Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    experiment_report(experiment["out"])
    assert figures
    for fig in figures:
        for ax in fig.axes:
            assert "labels" in ax.get_xlabel(), ax.get_xlabel()
            assert "(%)" in ax.get_ylabel(), ax.get_ylabel()


def test_a_folder_without_runs_is_an_error(tmp_path, capsys):
    with pytest.raises(EgalError, match="no finished run"):
        experiment_report(tmp_path)
    assert main(["report", "--experiment", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "config.json").write_text('{"config": '), r"config.json' is damaged"),
    (lambda d: (d / "config.json").write_text('{"config": []}'), r"config.json' is damaged \(its config is list"),
    (lambda d: (d / "cam_grid" / "images.npz").write_bytes(b"junk"), r"the Grad-CAM grid in .* is damaged"),
    (lambda d: _edit_first_run(d, lambda run: run["rounds"][0].pop("round")), "a round without its number"),
    (lambda d: _edit_first_run(d, lambda run: run["rounds"][0].update(accuracy="x")), "accuracy is 'x', not a number"),
])
def test_damaged_files_of_a_folder_are_named_not_tracebacks(experiment, tmp_path, capsys, damage, message):
    folder = tmp_path / "damaged"
    shutil.copytree(experiment["out"], folder)
    damage(folder)
    assert main(["report", "--experiment", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert re.search(message, err), err


def _edit_first_run(folder, edit):
    path = sorted((folder / "runs").glob("*.json"))[0]
    run = json.loads(path.read_text())
    edit(run)
    path.write_text(json.dumps(run))


def test_the_page_is_written_under_the_folders_report_lock(experiment, tmp_path, monkeypatch):
    # A simulate holds the folder's report lock while it writes its summary and page; egal report --experiment
    # wrote beside it unlocked, so a page built from the runs it had read could land after (and hide) the newer one.
    import fcntl

    import egal.report.experiment_page as experiment_page
    from egal.loop.folder import REPORT_LOCK

    folder = tmp_path / "experiment"
    shutil.copytree(experiment["out"], folder)
    held = []
    real = experiment_page.write_page

    def write_page(path, text):
        with open(folder / REPORT_LOCK, "a") as other:  # what another process's lock attempt finds now
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append(False)
            except BlockingIOError:
                held.append(True)
        return real(path, text)

    monkeypatch.setattr(experiment_page, "write_page", write_page)
    experiment_report(folder)
    assert held == [True]
