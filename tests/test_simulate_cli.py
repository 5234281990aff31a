"""`egal train` and `egal simulate` on small generated pools: outputs, resume, errors, help."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from egal.cli import main
from egal.demo_data import make_synthetic_pool
from egal.loop.config import ExperimentConfig
from egal.models import load_model

torch.set_num_threads(1)
FAST_TRAIN = ["--architecture", "tiny_cnn", "--input-size", "32", "--epochs", "1", "--embedding-dim", "8",
              "--k-shot", "2", "--n-query", "3", "--no-augment"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return str(make_synthetic_pool(tmp_path_factory.mktemp("pool"), 90, seed=0, image_size=32))


def test_train_writes_a_model_that_loads(pool, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert main(["train", "--pool", pool, "--out", str(out), "--quiet", "--beta", "1.0", *FAST_TRAIN]) == 0
    model = load_model(out)
    assert model.config.architecture == "tiny_cnn" and model.config.input_size == (32, 32)
    assert model.config.extra["training"]["beta"] == 1.0
    assert model.head.has_prototypes
    assert "wrote" in capsys.readouterr().out


def test_train_uses_only_the_labelled_rows(tmp_path, capsys):
    path = make_synthetic_pool(tmp_path / "half", 40, seed=2, image_size=32, label_fraction=0.5)
    labelled = sum(v is not None for v in pq.read_table(path, columns=["label"]).column("label").to_pylist())
    assert 0 < labelled < 40
    assert main(["train", "--pool", str(path), "--out", str(tmp_path / "m.pt"), *FAST_TRAIN]) == 0
    assert f"{labelled} labelled rows" in capsys.readouterr().err


def test_simulate_writes_tables_curves_and_resumes(pool, tmp_path, capsys):
    args = ["simulate", "--pool", pool, "--out", str(tmp_path), "--strategies", "random,egal:0.3", "--seeds", "2",
            "--rounds", "1", "--budget", "5", "--init", "12", "--group-column", "split", "--test-groups", "test",
            *FAST_TRAIN]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "random seed 1 round 1/1" in err  # plain log lines when stderr is not a terminal
    for name in ("rounds.csv", "summary.csv", "summary.md", "learning_curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    rounds = json.loads((tmp_path / "rounds.json").read_text())
    assert sorted({(r["strategy"], r["seed"]) for r in rounds}) == [("egal_a0.3", 0), ("egal_a0.3", 1), ("random", 0),
                                                                    ("random", 1)]
    assert {r["labels"] for r in rounds} == {12, 17}
    assert "egal_a0.3" in (tmp_path / "summary.md").read_text()
    assert main(args) == 0
    assert "ran 0 run(s), skipped 4" in capsys.readouterr().out


@pytest.mark.parametrize("quiet", [True, False])
def test_new_runs_beside_runs_decoded_by_other_rules_are_warned_of_in_one_line(pool, tmp_path, capsys,
                                                                               monkeypatch, quiet):
    import egal.loop.folder as folder

    args = ["simulate", "--pool", pool, "--out", str(tmp_path), "--seeds", "1", "--rounds", "1", "--budget", "5",
            "--init", "12", "--group-column", "split", "--test-groups", "test", *(["--quiet"] if quiet else []),
            *FAST_TRAIN]
    assert main([*args, "--strategies", "random"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(folder, "DECODE_RULES", folder.DECODE_RULES + 1)
    assert main([*args, "--strategies", "random,entropy"]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "decoded images by other rules" in line]
    assert len(warned) == 1 and "warning: the runs in" in warned[0], err
    assert "DecodeRulesChanged" not in err and "warnings.warn" not in err  # no Python warning line and source


def test_rows_that_cannot_be_decoded_are_one_warning_line(pool, tmp_path, capsys):
    table = pq.read_table(pool)
    images = table.column("image").to_pylist()
    images[3] = b"not an image"
    broken = tmp_path / "broken.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("image"), "image",
                                    pa.array(images, table.schema.field("image").type)), broken)
    assert main(["simulate", "--pool", str(broken), "--out", str(tmp_path / "out"), "--seeds", "1", "--rounds", "1",
                 "--budget", "5", "--init", "12", "--strategies", "random", "--quiet", *FAST_TRAIN]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("egal simulate: warning:")], err
    assert "UndecodedRows" not in err and ".py:" not in err  # no Python warning line with its source


@pytest.mark.parametrize("extra, message", [
    (["--strategies", "random,bald"], "unknown strategy 'bald'"),
    (["--alpha", "1.5"], "alpha must lie in [0, 1]"),
    (["--alpha-grid", "0.2,-0.5"], "must lie in [0, 1]"),
    (["--test-groups", "nowhere", "--group-column", "split"], "do not occur"),
    (["--seeds", "1,3,1"], "seeds lists 1 more than once"),
    (["--rounds", "0", "--strategies", "random,egal"], "would give one and the same run"),
    (["--strategies", "random,entropy,egal:1"], "strategies entropy and egal_a1 select the same rows"),
    (["--strategies", "random,egal-rank:1,egal:1"], "egal_rank_a1 and egal_a1 select the same rows"),
    (["--strategies", "random,misalignment", "--alpha-grid", "0,0.5"], "misalignment and egal_a0 select the same"),
    (["--strategies", "random,entropy+kcenter,egal-rank:1+kcenter"], "entropy+kcenter and egal_rank_a1+kcenter"),
    (["--strategies", "random,entropy,egal:0.99999999999"], "select the same rows"),  # alpha 1 in float32
    (["--strategies", "random,egal:1,egal:0.99999999"], "egal_a1 (alpha 1.0) and egal_a1 (alpha 0.99999999), equal "
     "in the float32 the scorer takes, select the same rows"),
    (["--strategies", "random,egal:0.3,egal:0.3000000001"], "would share a run file: egal_a0.3 (alpha 0.3), egal_a0.3"),
])
def test_simulate_refuses_bad_settings(pool, tmp_path, capsys, extra, message):
    assert main(["simulate", "--pool", pool, "--out", str(tmp_path), "--quiet", *FAST_TRAIN, *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_budget_the_pool_cannot_fill_is_refused_or_warned_before_the_runs(pool, tmp_path, capsys):
    args = ["simulate", "--pool", pool, "--strategies", "random", "--seeds", "1", "--init", "12", "--group-column",
            "split", "--test-groups", "test", "--quiet", *FAST_TRAIN]  # 72 pool rows, 60 once the seed set is drawn
    assert main([*args, "--out", str(tmp_path / "a"), "--rounds", "2", "--budget", "5000"]) == 2
    err = capsys.readouterr().err
    assert "--budget 5000 is more than the 60 pool rows that the seed set of --init 12" in err and err.count("\n") == 1
    assert "round 1 cannot select that many" in err and "choose a budget below 60," in err
    assert not (tmp_path / "a" / "runs" / "random__seed0.json").exists()
    # Rounds that one budget fills but not all: said once, before the first round, and the run goes on.
    assert main([*args, "--out", str(tmp_path / "b"), "--rounds", "4", "--budget", "30"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("egal simulate: warning: init 12 + rounds 4 x budget 30 = 132 labels, more than the pool's "
                          "72 rows: round 2 trains on every pool row, the same for every strategy, and rounds 3-4 are "
                          "not run; 2 round(s) of this budget fit (--rounds, --budget)\n"), err
    assert err.count("132 labels") == 1


def test_a_setting_that_worker_processes_find_wrong_is_said_as_without_them(pool, tmp_path, capsys):
    # Without a cache folder each worker reads the pool itself, so the budget check runs there, not here.
    args = ["simulate", "--pool", pool, "--strategies", "random,entropy", "--seeds", "1", "--init", "12",
            "--group-column", "split", "--test-groups", "test", "--quiet", "--workers", "2", *FAST_TRAIN]
    assert main([*args, "--out", str(tmp_path / "a"), "--rounds", "2", "--budget", "5000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("egal simulate: error: --budget 5000 is more than the 60 pool rows that the seed set of "
                          "--init 12 leaves"), err
    assert err.count("\n") == 1 and "worker" not in err


def test_bad_pools_are_refused(tmp_path, capsys):
    assert main(["simulate", "--pool", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    not_parquet = tmp_path / "junk.parquet"
    not_parquet.write_bytes(b"not a parquet file")
    assert main(["train", "--pool", str(not_parquet), "--out", str(tmp_path / "m.pt"), *FAST_TRAIN]) == 2
    assert "error" in capsys.readouterr().err


def test_a_pool_without_labels_is_refused(tmp_path, capsys):
    unlabelled = tmp_path / "unlabelled"
    path = make_synthetic_pool(unlabelled, 20, seed=1, image_size=32)
    table = pq.read_table(path)
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.nulls(len(table), pa.string()))
    pq.write_table(table, path)
    assert main(["train", "--pool", str(path), "--out", str(tmp_path / "m.pt"), "--quiet", *FAST_TRAIN]) == 2
    assert "label" in capsys.readouterr().err


def test_rows_without_a_group_are_refused_for_a_patient_wise_split(tmp_path, capsys):
    path = make_synthetic_pool(tmp_path / "groups", 20, seed=1, image_size=32)
    table = pq.read_table(path)
    groups = [None if i == 7 else f"patient{i % 5}" for i in range(len(table))]
    table = table.append_column("patient", pa.array(groups, pa.string()))
    pq.write_table(table, path)
    assert main(["simulate", "--pool", str(path), "--out", str(tmp_path / "o"), "--group-column", "patient",
                 "--quiet"]) == 2
    assert "1 labelled row(s) have no 'patient'" in capsys.readouterr().err
    assert not list((tmp_path / "o").glob("runs/*.json"))


@pytest.mark.parametrize("command, words", [("train", ["Grad-CAM", "--beta", "--k-shot"]),
                                            ("simulate", ["resumable", "--strategies", "--alpha-grid",
                                                          "misalignment"])])
def test_help_explains(command, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in words:
        assert word in text


def test_weights_none_overrides_a_configs_imagenet():
    from egal.cli import build_parser
    from egal.commands._train_options import train_overrides

    args = build_parser().parse_args(["simulate", "--out", "x", "--weights", "none", "--input-size", "64x48"])
    assert train_overrides(args) == {"weights": "none", "input_size": (64, 48)}
    config = ExperimentConfig.from_dict({"train": {"weights": "imagenet"}})
    assert config.with_overrides(train=train_overrides(args)).train.weights is None
    # A TOML config has no null: "none" there says the same (it was taken for a file named none).
    assert ExperimentConfig.from_dict({"train": {"weights": "none"}}).train.weights is None
    assert ExperimentConfig.from_dict({"train": {"weights": "Random"}}).train.weights is None


def test_train_takes_its_seed_from_the_config_unless_given(tmp_path):
    from egal.models import load_model

    config = tmp_path / "seed5.toml"
    config.write_text("[train]\nseed = 5\n")
    args = ["train", "--pool", str(make_synthetic_pool(tmp_path / "p", 40, seed=2, image_size=32)), *FAST_TRAIN,
            "--quiet"]
    assert main([*args, "--config", str(config), "--out", str(tmp_path / "a.pt")]) == 0
    assert load_model(tmp_path / "a.pt").config.extra["training"]["seed"] == 5  # was 0: --seed's default won
    assert main([*args, "--config", str(config), "--seed", "2", "--out", str(tmp_path / "b.pt")]) == 0
    assert load_model(tmp_path / "b.pt").config.extra["training"]["seed"] == 2


def test_settings_that_measure_nothing_are_warned_of_and_a_file_as_out_folder_is_named(tmp_path, capsys):
    # A pool without any ROI: misalignment and the Dice loss read nothing; a group column with two uneven groups:
    # the test split is far from its fraction.
    path = make_synthetic_pool(tmp_path / "p", 90, seed=0, image_size=32)
    table = pq.read_table(path)
    names = table.schema.names
    table = table.drop([c for c in ("mask", "mask_path", "boxes") if c in names])
    images = table.column("image").to_pylist()
    images[5] = b"not an image"  # rows that cannot be decoded: a warning that a worker raises, said by the parent
    table = table.set_column(table.schema.get_field_index("image"), "image",
                             pa.array(images, table.schema.field("image").type))
    site = pa.array(["big" if i % 5 else "small" for i in range(table.num_rows)])
    pq.write_table(table.append_column("site", site), tmp_path / "noroi.parquet")
    args = ["simulate", "--pool", str(tmp_path / "noroi.parquet"), "--seeds", "1", "--rounds", "1", "--budget", "5",
            "--init", "12", "--strategies", "random,egal", "--group-column", "site", "--test-fraction", "0.2",
            "--quiet", *FAST_TRAIN]
    (tmp_path / "taken").write_text("a user's file")
    assert main([*args, "--out", str(tmp_path / "taken")]) == 2
    assert "error: --out " in capsys.readouterr().err and (tmp_path / "taken").read_text() == "a user's file"
    for cache in (tmp_path / "taken" / "sub", f"{tmp_path / 'taken'}/../cache"):  # the OS walks through the file
        assert main([*args, "--out", str(tmp_path / "o"), "--cache-dir", str(cache)]) == 2
        assert "data.cache_dir (--cache-dir)" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert main([*args, "--out", str(tmp_path / "out"), "--beta", "0.5"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("egal simulate: warning:")]
    assert any("no pool row has an ROI" in w and "egal_a0.5" in w and "beta 0.5" in w for w in warned), warned
    assert any("the test split holds" in w and "not the test_fraction's 20%" in w for w in warned), warned
    assert any("cannot be decoded" in w for w in warned), warned  # (with workers: a TypeError rebuilding it)
    # With worker processes (and no cache, so the parent never loads the pool): the same lines, once each.
    assert main([*args, "--out", str(tmp_path / "out2"), "--beta", "0.5", "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert sorted(line for line in err.splitlines() if line.startswith("egal simulate: warning:")) == sorted(warned)
    assert ".py:" not in err


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A 'pretrained' tiny_cnn backbone file: what a frozen prefix needs (the same weights for every seed)."""
    from egal.models import build_model

    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / "tiny_cnn.pth"
    torch.save(build_model("tiny_cnn", "linear", ("a", "b"), input_size=(32, 32)).features.state_dict(), path)
    return str(path)


def test_simulate_with_a_frozen_prefix_the_shortcut_benchmark_and_egal_rank(pool, tiny_weights, tmp_path, capsys):
    args = ["simulate", "--pool", pool, "--out", str(tmp_path), "--strategies", "random,egal-rank", "--seeds", "2",
            "--rounds", "1", "--budget", "5", "--init", "12", "--group-column", "split", "--test-groups", "test",
            "--trainable-from", "features.conv3", "--weights", tiny_weights, "--shortcut-class", "malignant",
            "--shortcut-share", "0.5", "--cache-dir", str(tmp_path / "cache"), *FAST_TRAIN]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "feature cache ready" in err and "shortcut benchmark" in err
    assert list((tmp_path / "cache").glob("features-*-identity.npz"))
    config = json.loads((tmp_path / "config.json").read_text())["config"]
    assert config["train"]["trainable_from"] == "features.conv3"
    assert config["shortcut"]["target_class"] == "malignant"
    rounds = json.loads((tmp_path / "rounds.json").read_text())
    assert {r["strategy"] for r in rounds} == {"random", "egal_rank_a0.5"}
    assert all(r["marker_accuracy"] is not None for r in rounds)
    assert "Shortcut benchmark" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "shortcut.png").stat().st_size > 0


@pytest.mark.parametrize("extra, message", [
    (["--trainable-from", "features.conv9", "--weights", "WEIGHTS"], "has no child 'conv9'"),
    (["--trainable-from", "features.conv3"], "its weights are random"),
    (["--shortcut-class", "huge"], "not a class of the data"),
])
def test_simulate_refuses_a_bad_cut_or_shortcut_class(pool, tiny_weights, tmp_path, capsys, extra, message):
    extra = [tiny_weights if e == "WEIGHTS" else e for e in extra]
    args = ["simulate", "--pool", pool, "--out", str(tmp_path), "--quiet", "--seeds", "1", "--rounds", "1",
            "--budget", "5", "--init", "12", "--group-column", "split", "--test-groups", "test", *FAST_TRAIN, *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_workers_give_the_runs_of_one_process(pool, tiny_weights, tmp_path, capsys):
    """--workers 2 shares the (strategy, seed) runs out to two processes: each run is done once, round 0 of
    each seed is trained once and left in OUT/round0/, and every run equals the one-process run."""
    common = ["simulate", "--pool", pool, "--strategies", "random,entropy,egal", "--seeds", "2", "--rounds", "2",
              "--budget", "5", "--init", "12", "--group-column", "split", "--test-groups", "test", "--threads", "1",
              "--trainable-from", "features.conv3", "--weights", tiny_weights, "--cache-dir", str(tmp_path / "cache"),
              *FAST_TRAIN]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    captured = capsys.readouterr()
    assert "6 run(s) in 2 worker processes with 1 torch thread(s) each" in captured.err
    assert "[worker 0]" in captured.err and "[worker 1]" in captured.err
    assert "ran 6 run(s), skipped 0" in captured.out
    assert sorted(p.name for p in (tmp_path / "two" / "round0").glob("*.pt")) == ["seed0.pt", "seed1.pt"]
    assert not list((tmp_path / "two" / "runs").glob(".claims-*"))
    shared = 0
    for path in sorted((tmp_path / "one" / "runs").glob("*.json")):
        one, two = json.loads(path.read_text()), json.loads((tmp_path / "two" / "runs" / path.name).read_text())
        for a, b in zip(one["rounds"], two["rounds"], strict=True):
            assert (a["selected"], a["accuracy"], a["auc"], a["dice"]) == (b["selected"], b["accuracy"], b["auc"],
                                                                            b["dice"]), path.name
        shared += bool(two["rounds"][0].get("shared_with_other_strategies"))
    assert shared == 4  # per seed, one run trained round 0 and two loaded it
    assert main([*common, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    assert "ran 0 run(s), skipped 6" in capsys.readouterr().out


def test_simulate_never_writes_over_other_files_nor_mixes_pools_or_reads_a_damaged_run(pool, tmp_path, capsys):
    import shutil

    args = ["--strategies", "random", "--seeds", "1", "--rounds", "1", "--budget", "5", "--init", "12",
            "--group-column", "split", "--test-groups", "test", *FAST_TRAIN]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "report.html").write_text("the user's page")
    assert main(["simulate", "--pool", pool, "--out", str(tmp_path / "mine"), *args]) == 2
    assert "holds files (report.html) but no egal simulate config.json" in capsys.readouterr().err
    assert (tmp_path / "mine" / "report.html").read_text() == "the user's page"
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["report.html"]  # no lock file, no runs/ left
    copy = tmp_path / "pool.parquet"
    shutil.copy(pool, copy)
    out = tmp_path / "exp"
    assert main(["simulate", "--pool", str(copy), "--out", str(out), *args]) == 0
    original = copy.read_bytes()
    pq.write_table(pq.read_table(copy).slice(1), copy)  # the pool edited in place: another experiment
    assert main(["simulate", "--pool", str(copy), "--out", str(out), *args]) == 2
    assert "has changed since the runs" in capsys.readouterr().err
    copy.write_bytes(original)  # the same content again: resumable
    (out / "runs" / "random__seed0.json").write_text("{bad")
    assert main(["simulate", "--pool", str(copy), "--out", str(out), *args]) == 2
    assert "random__seed0.json' is damaged" in capsys.readouterr().err
    assert main(["report", "--experiment", str(out)]) == 2
    assert "random__seed0.json' is damaged" in capsys.readouterr().err


def test_workers_take_whole_seeds_first_so_an_experiment_cut_short_keeps_its_paired_runs():
    from egal.loop.workers import hand_out_order

    units = [(name, seed) for name in ("random", "entropy", "egal") for seed in (0, 1, 2)]
    order = hand_out_order(units, ["entropy", "random", "egal"])
    assert order[:3] == [("random", 0), ("entropy", 0), ("egal", 0)]  # the baseline first
    assert [seed for _, seed in order] == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_workers_die_with_a_killed_parent_and_write_nothing_after(pool, tmp_path):
    """SIGKILL to `egal simulate --workers 2` mid-run: its workers must not go on writing runs into --out."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import uuid

    from process_tags import TAG_VARIABLE, processes_tagged, wait_until_gone

    tag, out = uuid.uuid4().hex, tmp_path / "out"
    args = ["simulate", "--pool", pool, "--out", str(out), "--strategies", "random,entropy", "--seeds", "6",
            "--rounds", "3", "--budget", "5", "--init", "12", "--group-column", "split", "--test-groups", "test",
            "--workers", "2", "--threads", "1", "--quiet", *FAST_TRAIN, "--epochs", "100"]  # a minute of work
    proc = subprocess.Popen([sys.executable, "-m", "egal.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, TAG_VARIABLE: tag})
    try:
        deadline = time.time() + 120
        while len(processes_tagged(tag)) < 3 and time.time() < deadline:  # the parent and its two workers
            time.sleep(0.2)
        assert len(processes_tagged(tag)) >= 3, "the workers did not start"
        time.sleep(3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # The kernel ends a worker at once (PR_SET_PDEATHSIG) once it runs watch_parent; one still starting (imports
        # take seconds on a busy machine) finds its parent gone at that call and ends there.
        left = wait_until_gone(tag, timeout=60.0)
        assert not left, "workers outlived their killed parent"
        runs = lambda: sorted(p.name for p in (out / "runs").glob("*.json"))  # noqa: E731
        written = runs()
        time.sleep(2)
        assert runs() == written, "runs written after the parent was killed"
    finally:
        for process in processes_tagged(tag):
            process.kill()
        proc.kill()


def test_rounds_0_in_a_config_is_judged_with_the_options_that_follow(pool, tmp_path, capsys):
    config = tmp_path / "r0.toml"
    config.write_text("[loop]\nrounds = 0\n")
    args = ["simulate", "--pool", pool, "--config", str(config), "--seeds", "1", "--budget", "5", "--init", "12",
            "--quiet", *FAST_TRAIN]
    assert main([*args, "--out", str(tmp_path / "a"), "--strategies", "random"]) == 0  # was refused: 3 strategies
    assert main([*args, "--out", str(tmp_path / "b"), "--rounds", "1", "--strategies", "random,egal"]) == 0
    assert main([*args, "--out", str(tmp_path / "c"), "--strategies", "random,egal"]) == 2
    assert "the 2 strategies would give one and the same run" in capsys.readouterr().err


def test_a_damaged_experiment_record_is_one_line(pool, tmp_path, capsys):
    args = ["simulate", "--pool", pool, "--out", str(tmp_path), "--seeds", "1", "--rounds", "1", "--budget", "5",
            "--init", "12", "--strategies", "random", "--quiet", *FAST_TRAIN]
    assert main(args) == 0
    record = json.loads((tmp_path / "config.json").read_text())
    for damaged in ({**record, "identity": {**record["identity"], "train": None}}, [record]):
        (tmp_path / "config.json").write_text(json.dumps(damaged))
        assert main(args) == 2
        assert "config.json' is damaged" in capsys.readouterr().err
