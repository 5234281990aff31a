"""egal.loop: splits, seed set, strategies (which never see hidden labels), the simulation, the report."""
import csv
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import egal
from egal.loop import (
    ExperimentConfig,
    HiddenLabels,
    Strategy,
    balanced_seed_set,
    draw_seed_set,
    load_config,
    parse_strategies,
    run_simulation,
    run_strategy,
    score_in_batches,
    split_test,
    summarise,
)
from egal.loop.config import DataConfig, LoopConfig
from egal.loop.first_rounds import FirstRounds
from egal.loop.folder import refuse_foreign_folder
from egal.train import TrainConfig, train_model
from lesion_data import CLASSES, lesion_arrays, lesion_dataset

torch.set_num_threads(1)
SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "figshare_brain_tumor.parquet")


def tiny_experiment(strategies=("random", "entropy", "egal"), seeds=(0,), rounds=2):
    return ExperimentConfig(
        DataConfig(path="unused", group_column="patient"),
        TrainConfig(architecture="tiny_cnn", head="prototypical", input_size=(32, 32), in_channels=1, embedding_dim=8,
                    epochs=1, k_shot=2, n_query=3, augment=False),
        LoopConfig(strategies=strategies, seeds=seeds, init=12, rounds=rounds, budget=6, score_batch_size=64),
    )


def test_group_split_keeps_every_patient_on_one_side():
    labels = np.arange(100) % 3
    groups = np.array([f"p{i // 4}" for i in range(100)])
    pool, test = split_test(labels, groups, test_fraction=0.3, seed=1)
    assert not set(groups[pool]) & set(groups[test])
    assert len(pool) + len(test) == 100 and 0.3 <= len(test) / 100 < 0.4
    pool, test = split_test(labels, groups, test_groups=["p0", "p3"])
    assert sorted(set(groups[test])) == ["p0", "p3"] and len(test) == 8
    with pytest.raises(ValueError, match="do not occur"):
        split_test(labels, groups, test_groups=["nobody"])
    pool, test = split_test(labels, None, test_fraction=0.2, seed=0)  # no groups: stratified rows
    assert np.bincount(labels[test]).tolist() == [7, 7, 7]  # round(0.2 * 34), round(0.2 * 33) twice


def test_seed_set_is_class_balanced():
    labels = np.repeat([0, 1, 2], [50, 30, 4])
    rows = balanced_seed_set(labels, 30, np.random.default_rng(0))
    assert len(set(rows)) == 30
    assert np.bincount(labels[rows]).tolist() == [13, 13, 4]  # class 2 runs out; the others share the rest
    labels = np.repeat([0, 1, 2], [50, 30, 10])
    rows = balanced_seed_set(labels, 15, np.random.default_rng(0))
    assert np.bincount(labels[rows]).tolist() == [5, 5, 5]


def test_strategy_names_and_alphas():
    names = [s.name for s in parse_strategies(["random", "entropy", "misalignment", "egal", "egal:0.3"], alpha=0.7,
                                              alpha_grid=[0.3, 0.9])]
    assert names == ["random", "entropy", "misalignment", "egal_a0.7", "egal_a0.3", "egal_a0.9"]
    assert parse_strategies(["entropy"])[0].alpha == 1.0 and parse_strategies(["misalignment"])[0].alpha == 0.0
    with pytest.raises(ValueError, match="unknown strategy 'bald'"):
        parse_strategies(["bald"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        parse_strategies(["egal:1.5"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        parse_strategies(["egal"], alpha=-0.1)


def test_scored_strategies_select_the_fused_scorers_top_k():
    images, masks, labels = lesion_arrays(60, 32, seed=0)
    config = tiny_experiment().train
    model, _ = train_model(images[:30], masks[:30], labels[:30], CLASSES, config)
    ids = np.array([f"u{i:03d}" for i in range(30)])
    for strategy in (Strategy("entropy", 1.0), Strategy("misalignment", 0.0), Strategy("egal", 0.4)):
        chosen = strategy.select(model, images[30:], masks[30:], ids, 7, np.random.default_rng(0))
        scores = egal.gradcam.score_images(model, torch.from_numpy(images[30:]), masks[30:], alpha=strategy.alpha)
        assert ids[chosen].tolist() == egal.select_top_k(scores.score, ids, 7).tolist()
    pooled = score_in_batches(model, images[30:], masks[30:], alpha=0.4, batch_size=8)  # batching changes nothing
    one_call = egal.gradcam.score_images(model, images[30:], masks[30:], alpha=0.4)
    np.testing.assert_allclose(pooled.score, one_call.score, atol=1e-6)


def test_hidden_labels_are_only_told_once_revealed():
    oracle = HiddenLabels(np.array([2, 0, 1, 1]))
    assert oracle.reveal([1, 3]).tolist() == [0, 1]
    assert oracle.labels([3, 1]).tolist() == [1, 0]
    with pytest.raises(RuntimeError, match="not been annotated"):
        oracle.labels([0])


@pytest.mark.parametrize("strategy", [Strategy("random"), Strategy("entropy", 1.0), Strategy("egal", 0.5)])
def test_permuting_hidden_labels_changes_no_selection(strategy):
    dataset = lesion_dataset(72, 32, seed=1, groups=12)
    config = tiny_experiment()
    pool, test = split_test(dataset.labels, dataset.groups, test_groups=["patient_0", "patient_1"])
    seed_set = draw_seed_set(dataset, pool, 0, config)  # experimental design, fixed before any strategy runs
    first = run_strategy(dataset, pool, test, strategy, 0, config, seed_set=seed_set)
    ever_labelled = set(first["seed_set"]) | {i for r in first["rounds"] for i in r["selected"]}
    hidden = np.array([i for i in pool if dataset.ids[i] not in ever_labelled])
    assert len(hidden) > 10
    shuffled = replace(dataset, labels=dataset.labels.copy())
    permuted = np.random.default_rng(5).permutation(hidden)
    shuffled.labels[hidden] = dataset.labels[permuted]
    assert (shuffled.labels[hidden] != dataset.labels[hidden]).any()
    second = run_strategy(shuffled, pool, test, strategy, 0, config, seed_set=seed_set)
    assert [r["selected"] for r in second["rounds"]] == [r["selected"] for r in first["rounds"]]
    assert second["seed_set"] == first["seed_set"]


def test_strategies_share_the_seed_set_and_round_zero_model():
    dataset = lesion_dataset(60, 32, seed=2, groups=10)
    config = tiny_experiment(rounds=1)
    pool, test = split_test(dataset.labels, dataset.groups, test_groups=["patient_0"])
    seed_set = draw_seed_set(dataset, pool, 3, config)
    runs = [run_strategy(dataset, pool, test, s, 3, config, seed_set=seed_set)
            for s in (Strategy("random"), Strategy("entropy", 1.0))]
    assert runs[0]["seed_set"] == runs[1]["seed_set"]
    assert runs[0]["rounds"][0]["accuracy"] == runs[1]["rounds"][0]["accuracy"]
    assert runs[0]["rounds"][0]["selected"] != runs[1]["rounds"][0]["selected"]
    assert [r["labels"] for r in runs[0]["rounds"]] == [12, 18]
    for run in runs:  # the throughput of each round, for the GPU protocol's images/s and rows/s
        assert all(r["train_images_per_second"] > 0 for r in run["rounds"])
        assert run["rounds"][0]["select_rows_per_second"] > 0 and "select_rows_per_second" not in run["rounds"][1]


@pytest.mark.parametrize("processes", ["one", "several"])
def test_round_zero_is_trained_once_per_seed_and_scored_once_per_alpha(monkeypatch, tmp_path, processes):
    """In one process round 0 is shared in memory; across worker processes (a FirstRounds each, one folder)
    through the folder: trained once either way, and every run selects and scores as if it ran alone."""
    import egal.loop.rounds as rounds
    import egal.loop.strategies as strategies

    dataset = lesion_dataset(60, 32, seed=2, groups=10)
    config = tiny_experiment(rounds=1)
    pool, test = split_test(dataset.labels, dataset.groups, test_groups=["patient_0"])
    seed_set = draw_seed_set(dataset, pool, 3, config)
    chosen = [Strategy("entropy", 1.0), Strategy("egal", 0.5), Strategy("egal", 0.5, "rank")]
    alone = [run_strategy(dataset, pool, test, s, 3, config, seed_set=seed_set) for s in chosen]
    trainings, scorings = [], []
    real_train, real_score = rounds.train_model, strategies.score_in_batches
    monkeypatch.setattr(rounds, "train_model",
                        lambda *a, **k: trainings.append(k["features"]) or real_train(*a, **k))
    monkeypatch.setattr(strategies, "score_in_batches",
                        lambda *a, **k: scorings.append(k["alpha"]) or real_score(*a, **k))
    first_rounds = FirstRounds()
    shared = []
    for s in chosen:
        if processes == "several":
            first_rounds = FirstRounds(str(tmp_path / "round0"))
        shared.append(run_strategy(dataset, pool, test, s, 3, config, seed_set=seed_set, first_rounds=first_rounds))
    assert len(trainings) == 1 + len(chosen)  # round 0 once, round 1 per strategy
    if processes == "one":
        assert scorings == [1.0, 0.5]  # round 0: entropy, then egal; egal-rank reuses egal's scores
    else:  # a process scores the round-0 model it loaded itself
        assert scorings == [1.0, 0.5, 0.5]
        assert sorted(p.name for p in (tmp_path / "round0").iterdir()) == ["seed3.json", "seed3.lock", "seed3.pt"]
    for a, b in zip(alone, shared, strict=True):
        assert [r["selected"] for r in a["rounds"]] == [r["selected"] for r in b["rounds"]]
        assert [r["accuracy"] for r in a["rounds"]] == [r["accuracy"] for r in b["rounds"]]
    assert [r.get("shared_with_other_strategies", False) for r in shared[1]["rounds"]] == [True, False]


@pytest.mark.parametrize("section, values, message", [
    ("loop", {"strategies": [1, 2]}, "strategies must be names"),
    ("loop", {"alpha_grid": "0.3"}, "alpha_grid must be a list of numbers"),
    ("loop", {"threads": -1}, "threads must be an integer from 1 to 1024, got -1"),
    ("loop", {"threads": "2"}, "threads must be an integer from 1 to 1024, got '2'"),
    ("loop", {"score_batch_size": 0}, "score_batch_size must be a positive integer"),
    ("loop", {"seeds": [2**62]}, "list of integer seeds from 0 to 4294967295"),
    ("loop", {"strategies": ["egal:0.3", "egal:0.3000001"]}, "would share a run file"),
    ("data", {"split_seed": -1}, "split_seed must be a non-negative integer"),
    ("data", {"path": 5}, "path must be a string, got 5"),
    ("data", {"test_fraction": "0.2"}, r"test_fraction must lie in \(0, 1\), got '0.2'"),
    ("train", {"weight_decay": float("inf")}, "weight_decay must be a finite non-negative number, got inf"),
    ("train", {"beta": True}, "beta must be a finite non-negative number, got True"),
    ("train", {"lr": 1e39}, r"lr must be at most 3.403e\+38 \(float32's largest number\), got 1e\+39"),
    ("train", {"augment_settings": {"rotate_degrees": float("nan")}},
     "augment_settings.rotate_degrees must be a number from 0 to 180, got nan"),
    ("train", {"augment_settings": {"rotate_degrees": "ten"}}, "rotate_degrees must be a number from 0 to 180"),
    ("train", {"augment_settings": {"scale": 5.0}}, "augment_settings.scale must be a number from 0 to below 1"),
    ("train", {"augment_settings": {"hflip": "yes"}}, "augment_settings.hflip must be true or false, got 'yes'"),
    ("train", {"augment_settings": {"rotation": 5}}, r"unknown augment_settings \['rotation'\]; known: \['hflip'"),
    ("train", {"augment_settings": 5}, "augment_settings must be a table of settings, got 5"),
    ("train", {"augment": "false"}, "augment must be true or false, got 'false'"),  # (it switched augmentation on)
    ("train", {"in_channels": 3.0}, "in_channels must be 1 or 3, got 3.0"),
    ("train", {"in_channels": True}, "in_channels must be 1 or 3, got True"),
    ("train", {"input_size": 128}, r"input_size must be \(H, W\) positive integers, got 128"),
    ("loop", {"threads": 2**31}, "threads must be an integer from 1 to 1024, got 2147483648"),
    ("loop", {"alpha_grid": [10**400]}, "alpha_grid must be a list of numbers in"),
    ("shortcut", {"share": "0.5"}, r"shortcut share must be a number in \(0, 1\], got '0.5'"),
    ("shortcut", {"size": 10**400}, r"shortcut size must be a number in \(0, 0.5\), got an integer of 401 digits"),
    ("shortcut", {"margin": None}, r"shortcut margin must be a number in \[0, 0.5\), got None"),
    ("shortcut", {"seed": "x"}, "shortcut seed must be a non-negative integer"),
    ("shortcut", {"target_class": 5}, r"shortcut target_class must be a class name \(a string\), got 5"),
    ("data", {"test_groups": True}, r"test_groups must be group names \(strings, numbers\), got True"),
    ("data", {"test_groups": [[1]]}, r"test_groups must be group names \(strings, numbers\), got \[\[1\]\]"),
    ("data", {"test_groups": {"fold": 5}}, r"test_groups must be group names \(strings, numbers\), got \{'fold': 5\}"),
    ("data", {"test_groups": [b"5"]}, r"test_groups must be group names \(strings, numbers\), got \[b'5'\]"),
    ("data", {"test_groups": np.array([[1, 2], [3, 4]])}, r"got array\(\[\[1, 2\], \[3, 4\]\]\)$"),
    ("train", {"input_size": np.array(64)}, r"input_size must be \(H, W\) positive integers, got array\(64\)"),
])
def test_config_values_of_the_wrong_kind_are_refused_naming_them(section, values, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig.from_dict({section: values})


def test_one_test_group_given_as_a_string_is_that_group():
    assert DataConfig(test_groups="test").test_groups == ("test",)


def test_settings_given_as_numpy_scalars_sets_or_yaml_values_load_as_before():
    import datetime

    from egal.loop.shortcut import ShortcutConfig

    assert DataConfig(test_groups=5.5).test_groups == ("5.5",)  # a float group column's value
    assert DataConfig(test_groups=[5.0]).test_groups == ("5.0",)
    assert DataConfig(test_groups=np.array([5])).test_groups == ("5",)
    assert DataConfig(test_groups={"5"}).test_groups == ("5",)
    assert DataConfig(test_groups=np.array(5)).test_groups == ("5",)
    assert DataConfig(test_groups=[datetime.date(2021, 3, 4)]).test_groups == ("2021-03-04",)  # a YAML date
    assert ShortcutConfig(target_class=None).target_class == ""  # an empty YAML value: no benchmark
    train = TrainConfig(augment=np.False_, channels_last=np.bool_(True))
    assert train.augment is False and train.channels_last is True


def test_a_grouped_strategy_without_a_group_column_is_refused_before_anything_runs(tmp_path):
    config = replace(tiny_experiment(strategies=("random", "egal+group")), data=DataConfig(path="unused"))
    with pytest.raises(ValueError, match=r"strategy egal_a0.5\+group caps a round's rows per group, but the data "
                                         r"has no group column"):
        run_simulation(config, tmp_path / "out", dataset=lesion_dataset(60, 32, seed=3, groups=10), progress=False)
    assert not (tmp_path / "out").exists()


def test_an_out_folder_that_takes_no_files_is_refused_from_python_before_any_work(unwritable, monkeypatch):
    import egal.loop.simulation

    folder = unwritable

    def no_work(*args, **kwargs):
        raise AssertionError("the work began")

    monkeypatch.setattr(egal.loop.simulation, "_run_simulation", no_work)
    dataset = lesion_dataset(60, 32, seed=3, groups=10)
    with pytest.raises(egal.EgalError, match=rf"^out \(--out\) {str(folder)!r} is not writable here$"):
        run_simulation(tiny_experiment(), folder, dataset=dataset, progress=False)
    with pytest.raises(egal.EgalError, match=rf"^out \(--out\) {str(folder / 'exp')!r}: its folder {str(folder)!r} "
                       "is not writable here$"):  # a folder still to be made, in one that takes no files
        run_simulation(tiny_experiment(), folder / "exp", dataset=dataset, progress=False)
    assert os.listdir(folder) == []


def test_a_pool_used_up_before_the_last_round_is_recorded_and_said(tmp_path, capsys):
    dataset = lesion_dataset(60, 32, seed=3, groups=10)
    config = replace(tiny_experiment(strategies=("random",), rounds=5),
                     data=DataConfig(path="unused", group_column="patient", test_groups=("patient_0",)))
    config = config.with_overrides(loop={"budget": 25})
    from egal.loop.simulation import ExperimentWarning

    with pytest.warns(ExperimentWarning, match=r"^init 12 \+ rounds 5 x budget 25 = 137 labels, more than the pool's "
                      r"54 rows: round 2 trains on every pool row, the same for every strategy, and rounds 3-5 are not "
                      r"run; 1 round\(s\) of this budget fit \(--rounds, --budget\)$"):  # before the runs
        run_simulation(config, tmp_path, dataset=dataset, progress=True)
    record = json.loads((tmp_path / "runs" / "random__seed0.json").read_text())
    assert [r["labels"] for r in record["rounds"]] == [12, 37, 54] and record["pool_exhausted_after_round"] == 2
    assert "every pool row is labelled after round 2; rounds 3-5 not run" in capsys.readouterr().err


def test_a_group_cap_that_selects_fewer_rows_than_the_budget_is_recorded_and_said(tmp_path, capsys):
    # 9 pool patients, at most one row each a round, a budget of 25: 9 rows a round, said in the log, the run
    # record and the summary (the rounds were silently 16 rows short).
    dataset = lesion_dataset(60, 32, seed=3, groups=10)
    config = replace(tiny_experiment(strategies=("random", "entropy+group"), rounds=1),
                     data=DataConfig(path="unused", group_column="patient", test_groups=("patient_0",)))
    run_simulation(config.with_overrides(loop={"budget": 25}), tmp_path, dataset=dataset, progress=True)
    record = json.loads((tmp_path / "runs" / "entropy+group__seed0.json").read_text())
    assert [r["labels"] for r in record["rounds"]] == [12, 21] and record["rounds"][0]["budget_shortfall"] == 16
    assert "selected 9 rows, 16 fewer than the budget of 25" in capsys.readouterr().err
    assert "Note: entropy+group selected fewer rows than the budget" in (tmp_path / "summary.md").read_text()


def test_a_damaged_shared_round_zero_is_trained_again(tmp_path):
    folder = tmp_path / "round0"
    folder.mkdir()
    (folder / "seed3.pt").write_bytes(b"cut short")
    (folder / "seed3.json").write_text('{"history": ')
    with FirstRounds(str(folder)).hold(3) as slot:
        assert slot.value is None  # trained again by its holder, and then written over the damaged files


def test_a_shared_round_zero_with_a_nan_metric_is_loaded_with_nan(tmp_path):
    # Written as strict JSON (null), it must come back as the NaN the runs format and average.
    from egal.models import build_model
    from egal.train import TrainHistory

    model = build_model("tiny_cnn", "linear", ("a", "b"), input_size=(32, 32))
    history = TrainHistory(epoch_loss=[0.7], epoch_ce=[0.7], epoch_dice=[float("nan")], seconds=1.0, images=10)
    with FirstRounds(str(tmp_path)).hold(0) as slot:
        slot.value = (model, history, {"accuracy": 0.5, "auc": float("nan"), "dice": float("nan")}, {})
    assert "NaN" not in (tmp_path / "seed0.json").read_text()
    with FirstRounds(str(tmp_path)).hold(0) as slot:
        _, loaded, metrics, _ = slot.value
    assert metrics["accuracy"] == 0.5 and np.isnan(metrics["auc"]) and np.isnan(metrics["dice"])
    assert np.isnan(loaded.epoch_dice[0]) and f"{metrics['dice']:.3f}" == "nan"


def test_simulation_writes_results_resumes_and_refuses_another_config(tmp_path):
    dataset = lesion_dataset(60, 32, seed=3, groups=10)
    config = replace(tiny_experiment(strategies=("random", "egal"), seeds=(0, 1), rounds=1),
                     data=DataConfig(path="unused", group_column="patient", test_groups=("patient_0", "patient_1")))
    result = run_simulation(config, tmp_path, dataset=dataset, progress=False)
    assert len(result["ran"]) == 4 and not result["skipped"]
    for name in ("rounds.csv", "rounds.json", "summary.csv", "summary.md", "learning_curves.png", "config.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    rounds = json.loads((tmp_path / "rounds.json").read_text())
    assert len(rounds) == 4 * 2 and all(0 <= r["accuracy"] <= 1 for r in rounds)
    before = (tmp_path / "runs" / "egal_a0.5__seed1.json").read_text()
    os.remove(tmp_path / "runs" / "random__seed0.json")  # as if killed before that run finished
    result = run_simulation(config, tmp_path, dataset=dataset, progress=False)
    assert result["ran"] == [("random", 0)] and len(result["skipped"]) == 3
    assert (tmp_path / "runs" / "egal_a0.5__seed1.json").read_text() == before
    assert not list((tmp_path / "runs").glob("*.tmp*"))
    other = config.with_overrides(loop={"budget": 5})
    with pytest.raises(ValueError, match=r"different experiment configuration \(loop.budget: 6 there, 5 here; see "):
        run_simulation(other, tmp_path, dataset=dataset, progress=False)
    # A folder whose first start failed before any result takes the next configuration.
    empty = tmp_path / "failed_start"
    (empty / "runs").mkdir(parents=True)
    (empty / "config.json").write_text(json.dumps({"identity": {"loop": {"budget": 1}}, "config": {},
                                                   "pool_digest": None}))
    assert len(run_simulation(config, empty, dataset=dataset, progress=False)["ran"]) == 4


def test_summary_is_mean_and_sample_std_over_seeds():
    runs = [{"strategy": "random", "seed": s,
             "rounds": [{"round": 0, "labels": 10, "accuracy": a, "auc": 0.5, "dice": 0.1}]}
            for s, a in enumerate([0.5, 0.7])]
    (row,) = summarise(runs)
    assert row["seeds"] == 2 and row["accuracy_mean"] == pytest.approx(0.6)
    assert row["accuracy_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_experiment_configs_in_the_repository_load():
    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    for name in sorted(os.listdir(root)):
        config = load_config(os.path.join(root, name))
        assert config.data.path.endswith(".parquet") and config.loop.seeds
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['rouns'\] in \[loop\] \(did you mean 'rounds'\?\)"):
        ExperimentConfig.from_dict({"loop": {"rouns": 3}})
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['rouns'\] in the loop overrides \(did you mean"):
        ExperimentConfig().with_overrides(loop={"rouns": 3})


def test_yaml_config_with_a_relative_path(tmp_path):
    (tmp_path / "exp.yaml").write_text(
        "data:\n  path: data/pool.parquet\n  group_column: patient\n"
        "train:\n  beta: 0.0\n  input_size: [64, 48]\n  augment_settings: {hflip: false}\n"
        "loop:\n  strategies: random,egal\n  alpha_grid: [0.2]\n  seeds: 2\n")
    config = load_config(tmp_path / "exp.yaml")
    assert config.data.path == str(tmp_path / "data" / "pool.parquet")
    assert config.train.beta == 0.0 and config.train.input_size == (64, 48) and not config.train.augment_settings.hflip
    assert [s.name for s in config.loop.strategy_objects()] == ["random", "egal_a0.5", "egal_a0.2"]
    assert config.loop.seeds == (0, 1)


@pytest.mark.skipif(not os.path.isfile(SHARED_DATA),
                    reason="the real dataset ../shared/data/figshare_brain_tumor.parquet is not present")
def test_figshare_loads_with_a_patient_wise_test_fold():
    from egal.loop import load_dataset

    dataset = load_dataset(SHARED_DATA, (64, 64), 1, group_column="cv_fold")  # at 32 px one tiny tumour vanishes
    assert len(dataset) == 3064 and dataset.classes == ("glioma", "meningioma", "pituitary")
    assert (dataset.masks.reshape(len(dataset), -1).max(1) == 1).all()
    pool, test = split_test(dataset.labels, dataset.groups, test_groups=["5"])
    assert len(test) == 664 and len(pool) == 2400


def test_two_experiments_writing_the_decoded_cache_at_once_both_succeed(tmp_path, monkeypatch):
    # Two `egal simulate` runs started together both find no cache, decode, and write it: the second
    # writer must not rename away the first one's temporary file (it did when both used one name).
    import egal.loop.data as data

    pool = tmp_path / "pool.parquet"
    pool.write_bytes(b"stands in for a pool; _decode is replaced")
    monkeypatch.setattr(data, "_decode", lambda *args: lesion_dataset(12, 16, seed=1))
    real_savez, calls = np.savez, []

    def savez_then_another_process_writes(file, **arrays):
        real_savez(file, **arrays)
        calls.append(file)
        if len(calls) == 1:  # between this writer's savez and its rename, another writer finishes
            data.load_dataset(pool, (16, 16), 1, cache_dir=str(tmp_path / "cache"))

    monkeypatch.setattr(data.np, "savez", savez_then_another_process_writes)
    first = data.load_dataset(pool, (16, 16), 1, cache_dir=str(tmp_path / "cache"))
    assert len(calls) == 2 and calls[0] != calls[1]
    assert [p.name for p in (tmp_path / "cache").iterdir() if ".tmp" in p.name] == []
    monkeypatch.setattr(data.np, "savez", real_savez)
    cached = data.load_dataset(pool, (16, 16), 1, cache_dir=str(tmp_path / "cache"))
    np.testing.assert_array_equal(cached.images, first.images)


def test_another_configuration_is_refused_while_a_simulate_runs_in_the_folder(tmp_path, monkeypatch):
    # Two simulates starting into one new folder at once with different configurations: the first writes its
    # config.json and runs; the second finds a folder without results (as after a failed start) but in use.
    import threading

    import egal.loop.simulation as simulation

    dataset = lesion_dataset(60, 32, seed=3, groups=10)
    config = replace(tiny_experiment(strategies=("random",), rounds=1),
                     data=DataConfig(path="unused", group_column="patient", test_groups=("patient_0",)))
    running, release = threading.Event(), threading.Event()
    prepare = simulation.prepare_experiment

    def held_prepare(*args, **kwargs):
        running.set()
        assert release.wait(60)
        return prepare(*args, **kwargs)

    monkeypatch.setattr(simulation, "prepare_experiment", held_prepare)
    errors = []
    first = threading.Thread(target=lambda: _collect(errors, run_simulation, config, tmp_path, dataset=dataset,
                                                     progress=False))
    first.start()
    try:
        assert running.wait(60)
        with pytest.raises(ValueError, match=r"another egal simulate is running in .* with a different experiment "
                                             r"configuration \(loop.budget: 6 there, 5 here\)"):
            run_simulation(config.with_overrides(loop={"budget": 5}), tmp_path, dataset=dataset, progress=False)
    finally:
        release.set()
        first.join()
    assert not errors, errors
    assert json.loads((tmp_path / "config.json").read_text())["identity"]["loop"]["budget"] == 6
    assert (tmp_path / "runs" / "random__seed0.json").is_file()


def _collect(errors, function, *args, **kwargs):
    try:
        function(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - reported by the caller's assertion
        errors.append(error)


def test_a_pool_without_any_roi_writes_strict_json(tmp_path):
    # The Dice of a test set without ROIs is NaN; Python would write it as a bare NaN, which JSON.parse, jq and
    # most other readers refuse.
    dataset = lesion_dataset(60, 32, seed=3, groups=10)
    dataset = replace(dataset, masks=np.zeros_like(dataset.masks))
    config = replace(tiny_experiment(strategies=("random", "egal"), seeds=(0, 1), rounds=1),
                     data=DataConfig(path="unused", group_column="patient", test_groups=("patient_0",)))
    run_simulation(config, tmp_path, dataset=dataset, progress=False)

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    for path in [tmp_path / "rounds.json", *sorted((tmp_path / "runs").glob("*.json"))]:
        record = json.loads(path.read_text(), parse_constant=refuse)
        entries = record if isinstance(record, list) else record["rounds"]
        assert entries and all(e["dice"] is None for e in entries), path
        assert all(0 <= e["accuracy"] <= 1 for e in entries), path
    assert json.loads((tmp_path / "runs" / "random__seed0.json").read_text())["roi_cam_dice"] is None
    with open(tmp_path / "summary.csv") as f:
        assert {row["dice_mean"] for row in csv.DictReader(f)} == {"nan"}
    assert "none: no test image has an ROI" in (tmp_path / "report.html").read_text()


def test_a_run_file_written_with_a_bare_nan_is_still_read(tmp_path):
    from egal.loop.report import read_run

    path = tmp_path / "random__seed0.json"  # as egal wrote a Dice without ROIs before it wrote strict JSON
    path.write_text('{"strategy": "random", "seed": 0, "rounds": [{"round": 0, "labels": 12, "accuracy": 0.5, '
                    '"auc": 0.6, "dice": NaN}]}')
    assert np.isnan(read_run(path)["rounds"][0]["dice"])
    from egal.report.experiment_page import _ceiling_text

    assert _ceiling_text({"roi_cam_dice": float("nan")}) == _ceiling_text({"roi_cam_dice": None}) == (
        "none: no test image has an ROI")
    assert _ceiling_text({}) == _ceiling_text({"roi_cam_dice": "?"}) == "not recorded"
    assert _ceiling_text({"roi_cam_dice": 0.357}).startswith("35.7 %")
    path.write_text(path.read_text().replace("NaN", '"NaN"'))
    with pytest.raises(ValueError, match=r"is damaged \(round 0: dice is 'NaN', not a number\)"):
        read_run(path)


def test_claim_folders_of_a_killed_simulate_are_removed_and_a_running_ones_kept(tmp_path):
    import subprocess
    import sys

    from egal.loop.workers import CLAIMS_PREFIX, _remove_stale_claims

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, alive = int(ended.stdout), os.getpid()  # a process id that has just ended, and this one
    for name in (f"{CLAIMS_PREFIX}{dead}-abc", f"{CLAIMS_PREFIX}{alive}-def", f"{CLAIMS_PREFIX}old"):
        (tmp_path / name).mkdir()
    (tmp_path / "random__seed0.json").write_text("{}")
    _remove_stale_claims(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{CLAIMS_PREFIX}{alive}-def", f"{CLAIMS_PREFIX}old", "random__seed0.json"])


def test_claims_of_a_running_simulate_stay_whatever_its_process_id_looks_like_here(tmp_path):
    # A simulate in another PID namespace (a container) or on another host (NFS) writing other seeds into the
    # same folder: its process id means nothing here. Its claims folder was removed as dead, and it crashed.
    import subprocess
    import sys

    from egal.loop.workers import OWNER_LOCK_SUFFIX, _new_claims, _remove_stale_claims

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner, claims = _new_claims(str(tmp_path))
    elsewhere = os.path.join(str(tmp_path), f".claims-{int(ended.stdout)}-{os.path.basename(claims).split('-', 2)[2]}")
    os.rename(claims + OWNER_LOCK_SUFFIX, elsewhere + OWNER_LOCK_SUFFIX)  # the lock stays held: same file
    os.rename(claims, elsewhere)
    (tmp_path / ".taking-x.lock").write_text("")  # a simulate killed while taking its lock, a minute ago
    os.utime(tmp_path / ".taking-x.lock", (time.time() - 120, time.time() - 120))
    (tmp_path / ".taking-y.lock").write_text("")  # another simulate's, created but not locked yet: left alone
    _remove_stale_claims(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [os.path.basename(elsewhere), os.path.basename(elsewhere) + OWNER_LOCK_SUFFIX, ".taking-y.lock"])
    owner.close()  # that simulate killed: its lock is free
    _remove_stale_claims(str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == [".taking-y.lock"]


def test_a_folder_pool_loads_as_its_files_do_and_is_keyed_by_their_content(tmp_path):
    # `egal score` reads a folder of Parquet files as one pool; train and simulate said it did not exist.
    import shutil

    from egal.demo_data import make_synthetic_pool
    from egal.loop import load_dataset
    from egal.pool.digest import content_digest

    folder = make_synthetic_pool(tmp_path / "multi", 24, image_size=32, files=2)
    parts = sorted(folder.glob("*.parquet"))
    assert folder.is_dir() and len(parts) == 2
    cache = str(tmp_path / "cache")
    whole = load_dataset(folder, (32, 32), 1, cache_dir=cache)
    halves = [load_dataset(p, (32, 32), 1) for p in parts]
    np.testing.assert_array_equal(whole.ids, np.concatenate([h.ids for h in halves]))
    np.testing.assert_array_equal(whole.images, np.concatenate([h.images for h in halves]))
    assert len(os.listdir(cache)) == 1
    np.testing.assert_array_equal(load_dataset(folder, (32, 32), 1, cache_dir=cache).images, whole.images)
    before = content_digest(folder)
    shutil.copy(parts[0], parts[1])  # a file's content changes: another pool
    assert content_digest(folder) != before


def test_seeds_run_in_parallel_into_one_folder_give_one_report_of_all_runs(tmp_path):
    # As two processes with disjoint --seeds and one --out would (threads here, to keep the test fast): each
    # writes its own runs, and the report written last holds every run.
    import threading

    dataset = lesion_dataset(60, 32, seed=3, groups=10)
    base = replace(tiny_experiment(strategies=("random", "egal"), seeds=(0,), rounds=1),
                   data=DataConfig(path="unused", group_column="patient", test_groups=("patient_0", "patient_1")))
    errors = []

    def run(seeds):
        try:
            run_simulation(base.with_overrides(loop={"seeds": seeds}), tmp_path, dataset=dataset, progress=False)
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(seeds,)) for seeds in ((0,), (1,))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    rounds = json.loads((tmp_path / "rounds.json").read_text())
    assert sorted({(r["strategy"], r["seed"]) for r in rounds}) == [
        ("egal_a0.5", 0), ("egal_a0.5", 1), ("random", 0), ("random", 1)]
    with open(tmp_path / "summary.csv") as f:
        assert {row["seeds"] for row in csv.DictReader(f)} == {"2"}  # mean +- std over both processes' seeds
    assert (tmp_path / "report.html").stat().st_size > 0
    recorded = json.loads((tmp_path / "config.json").read_text())["config"]["loop"]
    assert recorded["seeds"] == [0, 1], "config.json names the seeds of both simulates, not the last one's"
    run_simulation(base.with_overrides(loop={"seeds": (2,), "strategies": ("random", "entropy")}), tmp_path,
                   dataset=dataset, progress=False)
    recorded = json.loads((tmp_path / "config.json").read_text())["config"]["loop"]
    assert recorded["seeds"] == [0, 1, 2] and recorded["strategies"] == ["random", "egal", "entropy"]


def test_the_write_check_of_one_simulate_is_not_a_strangers_file_to_another(tmp_path, monkeypatch):
    # Two simulates starting into one --out: the first one's write check creates and removes a probe file; the
    # second, checking the folder for files of something else in that instant, must count the probe as egal's.
    from egal._paths import check_writable

    out = tmp_path / "out"
    out.mkdir()
    with monkeypatch.context() as patched:
        patched.setattr(os, "remove", lambda path: None)  # the probe stays: the instant between create and remove
        check_writable(out, "out (--out)", inside=True)
    [probe] = os.listdir(out)
    refuse_foreign_folder(str(out))
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(egal.EgalError, match="notes.txt") as refused:
        refuse_foreign_folder(str(out))
    assert probe not in str(refused.value), "only the stranger's file is named"


def test_the_decoded_cache_follows_the_pool_content_and_the_decoding_rules_not_its_timestamp(tmp_path, monkeypatch):
    import egal.loop.data as data
    import egal.pool.decode as decode

    pool = tmp_path / "pool.parquet"
    pool.write_bytes(b"stands in for a pool; _decode is replaced")
    decoded = []
    monkeypatch.setattr(data, "_decode", lambda *args: decoded.append(1) or lesion_dataset(12, 16, seed=len(decoded)))
    cache = str(tmp_path / "cache")
    first = data.load_dataset(pool, (16, 16), 1, cache_dir=cache)
    os.utime(pool, (1_000_000_000, 1_000_000_000))  # a fresh copy of the same file: new timestamps
    again = data.load_dataset(pool, (16, 16), 1, cache_dir=cache)
    assert len(decoded) == 1
    np.testing.assert_array_equal(again.images, first.images)
    pool.write_bytes(b"stands in for a pool; edited in place")  # new content: decoded again
    edited = data.load_dataset(pool, (16, 16), 1, cache_dir=cache)
    assert len(decoded) == 2 and not np.array_equal(edited.images, first.images)
    # An egal that decodes the same bytes differently (16-bit colour PNG at 8 bits, say) does not reuse them.
    monkeypatch.setattr(decode, "DECODE_RULES", decode.DECODE_RULES + 1)
    data.load_dataset(pool, (16, 16), 1, cache_dir=cache)
    assert len(decoded) == 3


def test_a_pool_of_image_files_edited_in_place_is_decoded_again(tmp_path, monkeypatch):
    # The decoded cache (and simulate's pool check) hashed the Parquet file only: images fixed on disk (turned
    # upright, say) trained from the old pixels without a word.
    import egal.loop.data as data
    import egal.pool.digest as pool_digest
    from egal.pool.encode import encode_png
    from pool_files import write_pool

    (tmp_path / "imgs").mkdir()
    for i in range(4):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(encode_png(np.full((8, 8), 10 * i, np.uint8)))
    pool = write_pool(tmp_path / "pool.parquet", {"id": [f"r{i}" for i in range(4)],
                                                  "image_path": [f"imgs/{i}.png" for i in range(4)],
                                                  "label": ["a", "b", "a", "b"]})
    decoded = []
    monkeypatch.setattr(data, "_decode", lambda *args: decoded.append(1) or lesion_dataset(12, 16, seed=len(decoded)))
    cache = str(tmp_path / "cache")
    before = pool_digest.content_digest(str(pool))
    data.load_dataset(pool, (16, 16), 1, cache_dir=cache)
    data.load_dataset(pool, (16, 16), 1, cache_dir=cache)
    assert len(decoded) == 1
    (tmp_path / "imgs" / "2.png").write_bytes(encode_png(np.full((8, 8), 99, np.uint8)))  # edited in place
    assert pool_digest.content_digest(str(pool)) != before
    data.load_dataset(pool, (16, 16), 1, cache_dir=cache)
    assert len(decoded) == 2
    (tmp_path / "imgs" / "2.png").unlink()  # a missing file changes it too
    missing = pool_digest.content_digest(str(pool))
    assert missing != before
    # Where the pool lies does not count (a copy, a synced folder), a missing file included.
    import shutil

    shutil.copytree(tmp_path / "imgs", tmp_path / "copy" / "imgs")
    shutil.copy(pool, tmp_path / "copy" / "pool.parquet")
    assert pool_digest.content_digest(str(tmp_path / "copy" / "pool.parquet")) == missing
    # Images are found where the pool reader finds them: beside the file a pool given as a link points to, and
    # beside the link in a folder pool.
    (tmp_path / "linked" / "folder").mkdir(parents=True)
    shutil.copytree(tmp_path / "imgs", tmp_path / "linked" / "imgs")
    shutil.copytree(tmp_path / "imgs", tmp_path / "linked" / "folder" / "imgs")
    (tmp_path / "linked" / "pool.parquet").symlink_to(pool)
    (tmp_path / "linked" / "folder" / "pool.parquet").symlink_to(pool)
    as_link, in_folder = (pool_digest.content_digest(str(tmp_path / "linked" / p)) for p in ("pool.parquet", "folder"))
    (tmp_path / "linked" / "imgs" / "0.png").write_bytes(encode_png(np.full((8, 8), 77, np.uint8)))  # not read
    assert pool_digest.content_digest(str(tmp_path / "linked" / "pool.parquet")) == as_link
    (tmp_path / "imgs" / "0.png").write_bytes(encode_png(np.full((8, 8), 77, np.uint8)))
    assert pool_digest.content_digest(str(tmp_path / "linked" / "pool.parquet")) != as_link
    (tmp_path / "linked" / "folder" / "imgs" / "1.png").write_bytes(encode_png(np.full((8, 8), 5, np.uint8)))
    assert pool_digest.content_digest(str(tmp_path / "linked" / "folder")) != in_folder
    # A file that cannot be read (permissions, gone after its stat) is noted, never a traceback.
    readable = pool_digest.content_digest(str(pool))
    real = pool_digest._digest.__wrapped__

    def unreadable(path, *rest):
        if path.endswith("0.png"):
            raise PermissionError(13, "Permission denied", path)
        return real(path, *rest)

    monkeypatch.setattr(pool_digest._digest, "__wrapped__", unreadable)
    pool_digest._REFERENCED_DIGESTS.clear()
    assert pool_digest.content_digest(str(pool)) != readable


def test_a_pool_the_reader_refuses_leaves_the_digest_to_the_reader_s_one_line_error(tmp_path):
    # Path columns of another type, text that is no UTF-8, a name given twice: the digest ran first and gave a
    # traceback; the pool reader's own check names the fault.
    import pyarrow as pa
    import pyarrow.parquet as pq

    import egal.pool.digest as pool_digest
    from egal.pool import PoolError, open_pool

    invalid_text = pa.Array.from_buffers(pa.string(), 1, pa.array([b"\xff.png"], pa.binary()).buffers())
    tables = {"timestamps": pa.table({"id": ["a"], "image_path": pa.array([10**15], pa.timestamp("s"))}),
              "bytes": pa.table({"id": ["a"], "image_path": invalid_text}),
              "twice": pa.Table.from_arrays([pa.array(["a"]), pa.array(["x.png"]), pa.array(["y.png"])],
                                            names=["id", "image_path", "image_path"])}
    messages = {"timestamps": "column 'image_path' must be a string", "bytes": "codec can't decode",
                "twice": r"column name\(s\) \['image_path'\] appear more than once"}
    for name, table in tables.items():
        pq.write_table(table, tmp_path / f"{name}.parquet")
        pool_digest.content_digest(str(tmp_path / f"{name}.parquet"))
        with pytest.raises(PoolError, match=messages[name]):
            open_pool(tmp_path / f"{name}.parquet")


def test_an_experiment_folder_recorded_by_the_parquet_bytes_alone_still_resumes(tmp_path):
    # Folders of a pool of image files made before egal hashed the files recorded the Parquet bytes alone.
    import egal.pool.digest as pool_digest
    from egal.loop.folder import _check_or_write_config
    from egal.pool.encode import encode_png
    from pool_files import write_pool

    (tmp_path / "imgs").mkdir()
    for i in range(2):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(encode_png(np.full((8, 8), 10 * i, np.uint8)))
    pool = write_pool(tmp_path / "pool.parquet", {"id": ["a", "b"], "image_path": ["imgs/0.png", "imgs/1.png"],
                                                  "label": ["x", "y"]})
    config = ExperimentConfig(data=DataConfig(path=str(pool)))
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "random__seed0.json").write_text("{}")
    older = pool_digest.content_digest(str(pool), with_files=False)
    assert older != pool_digest.content_digest(str(pool))
    (out / "config.json").write_text(json.dumps({"identity": config.identity(), "pool_digest": older}))
    _check_or_write_config(config, str(out), folder_idle=lambda: True)  # resumes
    assert json.loads((out / "config.json").read_text())["pool_digest"] == pool_digest.content_digest(str(pool))
    # ... also once the pool was copied elsewhere (the same content at another path)
    import shutil

    shutil.copytree(tmp_path / "imgs", tmp_path / "moved" / "imgs")
    moved = shutil.copy(pool, tmp_path / "moved" / "pool.parquet")
    (out / "config.json").write_text(json.dumps({"identity": config.identity(), "pool_digest": older}))
    _check_or_write_config(ExperimentConfig(data=DataConfig(path=str(moved))), str(out), folder_idle=lambda: True)
    (out / "config.json").write_text(json.dumps({"identity": config.identity(), "pool_digest": "0" * 24}))
    with pytest.raises(ValueError, match="has changed since the runs"):
        _check_or_write_config(config, str(out), folder_idle=lambda: True)


def test_the_gpu_training_settings_leave_older_result_folders_resumable():
    plain = ExperimentConfig().identity()["train"]
    assert "precision" not in plain and "channels_last" not in plain  # as folders written before them recorded
    # trainable_from at its default too (docs/figshare_cpu/config.json has none: its resume was refused), and
    # train.seed, which simulate does not use (1000 x seed + round), never blocks a resume.
    assert "trainable_from" not in plain and "seed" not in plain
    from egal.loop.config import comparable_identity

    recorded = json.loads(open(Path(__file__).parents[1] / "docs" / "figshare_cpu" / "config.json").read())
    assert "trainable_from" not in recorded["identity"]["train"]
    now = ExperimentConfig.from_dict(recorded["config"]).identity()
    assert comparable_identity(recorded["identity"]) == json.loads(json.dumps(now))
    faster = ExperimentConfig().with_overrides(train={"precision": "bf16", "channels_last": True}).identity()["train"]
    assert faster["precision"] == "bf16" and faster["channels_last"] is True


def test_exclusion_values_match_by_value_and_big_integers_exactly():
    from egal.loop.data import holds_value

    assert holds_value(1.0, "1") and holds_value(np.int64(3), "3.0") and holds_value(np.bool_(True), "true")
    assert holds_value("test", "test") and not holds_value("Test", "test") and not holds_value(None, "None")
    # 2**53 + 1 is not 2**53 (a float comparison said it was, and left out the wrong row)
    assert holds_value(2**53 + 1, str(2**53 + 1)) and not holds_value(2**53 + 1, str(2**53))
    assert holds_value(2**53 + 1, "9007199254740993.0") and not holds_value(2**53, "9007199254740993.0")
    assert not holds_value(3, "6/2") and not holds_value(16, "0x10")
    assert not holds_value(3, "3e999999999") and not holds_value(3, "sNaN")  # no 10**999999999 computed
    assert not holds_value(3, "3.5") and not holds_value(5, "x") and not holds_value(float("nan"), "nan")
