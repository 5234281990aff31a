"""`egal train` and `egal simulate` from the command line: what they say about dropped rows, existing
outputs and a missing PyTorch."""
import os
import subprocess
import sys
import textwrap

import pytest

from pools import make_rows, save_tiny_model, write_pool

FAST = ["--architecture", "tiny_cnn", "--head", "linear", "--input-size", "32", "--epochs", "1", "--batch-size", "8",
        "--quiet"]


def test_train_names_the_labelled_rows_it_leaves_out(tmp_path, capsys):
    pytest.importorskip("torch")
    from egal.cli import main

    rows = make_rows(24, folder=tmp_path, roi="boxes")
    rows[3]["image"] = b"not an image"  # labelled (odd rows carry a label)
    rows[7]["image"] = rows[7]["image"][:50]  # labelled, truncated
    rows[4]["image"] = b"junk"  # unlabelled: never trained on anyway
    pool = write_pool(tmp_path / "pool.parquet", rows)
    assert main(["train", "--pool", str(pool), "--out", str(tmp_path / "m.pt"), *FAST]) == 0
    err = capsys.readouterr().err
    assert "left out 2 labelled row(s) that cannot be decoded" in err, err
    assert "row 3 (id 'scan_0003'): image:" in err and "row 7 (id 'scan_0007'): image:" in err
    assert "scan_0004" not in err
    assert (tmp_path / "m.pt").is_file()


def test_train_refuses_to_lose_a_class_whose_every_row_fails_to_decode(tmp_path, capsys):
    pytest.importorskip("torch")
    from egal.cli import main
    from pools import CLASSES

    rows = make_rows(24, folder=tmp_path, roi="boxes")
    lost = [r for r in rows if r["label"] == CLASSES[0]]
    for row in lost:
        row["image"] = b"not an image"
    pool = write_pool(tmp_path / "pool.parquet", rows)
    assert main(["train", "--pool", str(pool), "--out", str(tmp_path / "m.pt"), *FAST]) == 2
    err = capsys.readouterr().err
    assert f"class {CLASSES[0]!r} has {len(lost)} labelled row(s) and none of them decodes (first id " \
           f"{lost[0]['id']!r}: image:" in err and f"--exclude label={CLASSES[0]}" in err
    assert not (tmp_path / "m.pt").exists()
    # Leaving the class out as the message says trains on the other classes.
    assert main(["train", "--pool", str(pool), "--out", str(tmp_path / "m.pt"), *FAST, "--exclude",
                 f"label={CLASSES[0]}"]) == 0
    from egal.models import load_model

    assert CLASSES[0] not in load_model(str(tmp_path / "m.pt")).config.classes


def test_train_warns_of_classes_that_read_like_missing_values(tmp_path, capsys):
    pytest.importorskip("torch")
    from egal.cli import main

    rows = make_rows(24, folder=tmp_path, roi="boxes")
    for row in rows[1::6]:
        row["label"] = "nan"  # as pandas' astype(str) writes a missing label
    pool = write_pool(tmp_path / "pool.parquet", rows)
    assert main(["train", "--pool", str(pool), "--out", str(tmp_path / "m.pt"), *FAST]) == 0
    assert "class(es) 'nan' of column 'label' read like a missing value" in capsys.readouterr().err


def test_train_leaves_out_a_labelled_test_split_when_asked(tmp_path, capsys):
    pytest.importorskip("torch")
    from egal.cli import main
    from egal.models import load_model

    rows = make_rows(24, folder=tmp_path, roi="boxes")
    for i, row in enumerate(rows):
        row["split"] = "test" if i % 4 == 1 else "train"  # 6 labelled test rows (odd rows are labelled)
    pool = write_pool(tmp_path / "pool.parquet", rows)
    args = ["train", "--pool", str(pool), "--out", str(tmp_path / "m.pt"), *FAST[:-1]]
    assert main([*args, "--exclude", "split=test"]) == 0
    err = capsys.readouterr().err
    assert "left out 6 labelled row(s) by --exclude split=test" in err and "6 labelled rows, classes" in err, err
    training = load_model(tmp_path / "m.pt").config.extra["training"]
    assert training["excluded"] == {"rows": 6, "by": ["split=test"]}
    assert main([*args, "--overwrite", "--exclude", "site=x"]) == 2
    assert "--exclude 'site' is not a column of the pool" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--exclude", "split"]) == 2
    assert "must be COLUMN=VALUE" in capsys.readouterr().err
    # Values match by value in number and truth columns (a fold 1 stored as 1.0, as pandas writes an integer
    # column with nulls); a pair that matches no labelled row is a typo, refused (it left nothing out).
    for i, row in enumerate(rows):
        row["fold"] = float(i % 3)
        row["held_out"] = i % 4 == 1
    pool = write_pool(tmp_path / "pool2.parquet", rows)
    args2 = ["train", "--pool", str(pool), "--out", str(tmp_path / "m.pt"), "--overwrite", *FAST[:-1]]
    assert main([*args2, "--exclude", "fold=1", "--exclude", "held_out=true"]) == 0
    assert "left out 8 labelled row(s) by --exclude fold=1 held_out=true" in capsys.readouterr().err
    assert main([*args2, "--exclude", "split=Test"]) == 2
    err = capsys.readouterr().err
    assert "exclude split=Test (--exclude) matches no labelled row" in err and "'test', 'train'" in err


def test_train_says_when_beta_has_no_roi_to_train_on(tmp_path, capsys):
    pytest.importorskip("torch")
    import numpy as np

    from egal.cli import main
    from egal.pool.encode import encode_png

    rows = make_rows(24, folder=tmp_path)
    for row in rows:
        row["mask"] = encode_png(np.zeros((40, 40), np.uint8))  # an all-zero mask: no ROI
    pool = write_pool(tmp_path / "pool.parquet", rows)
    assert main(["train", "--pool", str(pool), "--out", str(tmp_path / "m.pt"), "--beta", "0.5", *FAST]) == 0
    assert "no labelled row has an ROI (mask or box): beta 0.5 has no Grad-CAM/ROI Dice" in capsys.readouterr().err


def test_train_refuses_to_overwrite_without_overwrite(tmp_path, capsys):
    pytest.importorskip("torch")
    from egal.cli import main
    from egal.models import load_model

    pool = write_pool(tmp_path / "pool.parquet", make_rows(24, folder=tmp_path, roi="boxes"))
    out = tmp_path / "m.pt"
    save_tiny_model(out)  # an earlier model
    earlier = out.read_bytes()
    assert main(["train", "--pool", str(pool), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and out.read_bytes() == earlier
    # --overwrite replaces a model, never another file a mistyped --out names (another pool, a table).
    other = tmp_path / "other.parquet"
    other.write_bytes(open(pool, "rb").read())
    assert main(["train", "--pool", str(pool), "--out", str(other), "--overwrite", *FAST]) == 2
    assert "is not a model file" in capsys.readouterr().err and other.read_bytes() == open(pool, "rb").read()
    import zipfile

    with zipfile.ZipFile(tmp_path / "backup.zip", "w") as archive:  # a zip, but no model: any zip was replaced
        archive.writestr("study1/labels.csv", "id,label\n")
    before = (tmp_path / "backup.zip").read_bytes()
    assert main(["train", "--pool", str(pool), "--out", str(tmp_path / "backup.zip"), "--overwrite", *FAST]) == 2
    assert "is not a model file" in capsys.readouterr().err and (tmp_path / "backup.zip").read_bytes() == before
    assert main(["train", "--pool", str(pool), "--out", str(out), "--overwrite", *FAST]) == 0
    load_model(out)
    assert [n for n in os.listdir(tmp_path) if ".tmp-" in n] == []


BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys

    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch.") or name == "torchvision":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, NoTorch())
    from egal.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.parametrize("command", [["train", "--out", "m.pt"], ["simulate", "--out", "results"]])
def test_without_pytorch_train_and_simulate_say_what_to_install(tmp_path, command):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(6, folder=tmp_path))
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH, command[0], "--pool", str(pool), *command[1:]],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "needs PyTorch" in done.stderr and "pip install 'egal-al[torch]'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "results").exists()


def test_a_missing_optional_package_names_its_extra(tmp_path):
    # A command that needs an optional package that is not installed says which extra brings it,
    # before it writes anything.
    torch = pytest.importorskip("torch")
    from egal.models import build_model, save_model

    script = BLOCK_TORCH.replace('name == "torch" or name.startswith("torch.") or name == "torchvision"',
                                 'name == "ray" or name.startswith("ray.")')
    pool = write_pool(tmp_path / "pool.parquet", make_rows(3, folder=tmp_path))
    torch.manual_seed(0)
    save_model(build_model("tiny_cnn", "linear", ("a", "b", "c"), input_size=(32, 32), in_channels=1),
               tmp_path / "m.pt")
    done = subprocess.run([sys.executable, "-c", script, "score", "--pool", str(pool), "--model",
                           str(tmp_path / "m.pt"),
                           "--engine", "ray", "--out", str(tmp_path / "s.parquet")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "'ray'" in done.stderr and "pip install 'egal-al[ray]'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "s.parquet.parts").exists()


def test_train_checks_threads_and_a_writable_out_folder_before_the_work(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    from egal.cli import main

    pool = write_pool(tmp_path / "pool.parquet", make_rows(24, folder=tmp_path, roi="boxes"))
    assert main(["train", "--pool", str(pool), "--out", str(tmp_path / "m.pt"), *FAST, "--threads", "0"]) == 2
    assert "--threads must be an integer from 1 to 1024, got 0" in capsys.readouterr().err
    assert main(["train", "--pool", str(pool), "--out", str(tmp_path / "m.pt"), *FAST, "--threads", "99999999999"]) == 2
    assert "--threads must be an integer from 1 to 1024, got 99999999999" in capsys.readouterr().err  # traceback
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if mode == os.W_OK else real_access(path, mode))
    assert main(["train", "--pool", str(pool), "--out", str(tmp_path / "m.pt"), *FAST]) == 2  # (a read-only mount)
    assert f"its folder {str(tmp_path)!r} is not writable here" in capsys.readouterr().err


def test_train_refuses_a_folder_that_says_writable_but_is_not(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    import tempfile

    from egal.cli import main

    pool = write_pool(tmp_path / "pool.parquet", make_rows(24, folder=tmp_path, roi="boxes"))

    def refused(*args, **kwargs):  # as in /sys for root: os.access says yes, creating a file fails
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    assert main(["train", "--pool", str(pool), "--out", str(tmp_path / "m.pt"), *FAST]) == 2
    assert f"its folder {str(tmp_path)!r} is not writable here" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_a_model_that_cannot_be_saved_after_training_is_kept_elsewhere(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    import egal.models
    from egal.cli import main
    from egal.models import load_model

    pool = write_pool(tmp_path / "pool.parquet", make_rows(24, folder=tmp_path, roi="boxes"))
    real_save = egal.models.save_model
    out = tmp_path / "m.pt"

    def save_fails_beside_out(model, path):
        if os.path.dirname(os.path.abspath(path)) == str(tmp_path):  # the disk of --out filled during training
            raise RuntimeError("[enforce fail at inline_container.cc:747] . open file failed")
        real_save(model, path)

    monkeypatch.setattr(egal.models, "save_model", save_fails_beside_out)
    assert main(["train", "--pool", str(pool), "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert f"--out {str(out)!r} could not be written (RuntimeError: " in err and "Traceback" not in err
    rescue = err.split("the trained model was written to ")[1].split(" instead")[0]
    try:
        assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".m.pt") or "tmp" in n]
        assert load_model(rescue).config.architecture == "tiny_cnn"
    finally:
        os.remove(rescue)


def test_train_says_when_episodes_take_fewer_classes_or_shots_than_asked(tmp_path, capsys):
    pytest.importorskip("torch")
    from egal.cli import main

    rows = make_rows(24, folder=tmp_path, roi="boxes")  # 12 labelled rows, 4 of each of 3 classes
    pool = write_pool(tmp_path / "pool.parquet", rows)
    args = ["train", "--pool", str(pool), "--out", str(tmp_path / "m.pt"), "--architecture", "tiny_cnn",
            "--input-size", "32", "--epochs", "1", "--head", "prototypical"]
    assert main([*args, "--n-way", "5", "--k-shot", "4"]) == 0
    err = capsys.readouterr().err
    assert "n_way 5 (--n-way) with 3 classes of 2 rows or more: episodes are 3-way" in err
    assert "k_shot 4 (--k-shot): these classes have too few rows" in err and "'benign' (4 rows)" in err
    assert main([*args, "--n-way", "3", "--k-shot", "3", "--overwrite"]) == 0
    assert "episodes are" not in (err := capsys.readouterr().err) and "too few rows" not in err
    # A class of one labelled row takes part in no episode: the episodes are 2-way, and the note says why.
    labelled_rows = [r for r in rows if r["label"] == "normal"]
    for row in labelled_rows[1:]:
        row["label"] = None
    pool = write_pool(tmp_path / "single.parquet", rows)
    args[2] = str(pool)
    assert main([*args, "--n-way", "3", "--k-shot", "3", "--overwrite"]) == 0
    err = capsys.readouterr().err
    assert "class(es) 'normal' with a single labelled row take part in no episode" in err
    assert "n_way 3 (--n-way) with 2 classes of 2 rows or more: episodes are 2-way" in err
    assert "'normal' (1 rows)" not in err


def test_a_mistyped_or_missing_column_names_the_flag_that_names_it(tmp_path, capsys):
    pytest.importorskip("torch")
    from egal.cli import main

    rows = make_rows(12, folder=tmp_path)
    pool = write_pool(tmp_path / "pool.parquet", rows)
    columns = "it has 'id', 'label', 'image', 'mask'"
    assert main(["train", "--pool", pool, "--label-column", "diagnosis", "--out", str(tmp_path / "m.pt"), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith("egal train: error: --label-column 'diagnosis' is not a column of the pool ")
    assert columns in err
    sim = ["simulate", "--pool", pool, "--out", str(tmp_path / "sim"), "--quiet"]
    assert main([*sim, "--group-column", "patient"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("egal simulate: error: --group-column 'patient' is not a column of the pool ")
    assert columns in err
    assert main([*sim, "--label-column", "diagnosis"]) == 2
    assert "error: --label-column 'diagnosis' is not a column" in capsys.readouterr().err
    assert not (tmp_path / "sim").exists()  # said before the experiment's folder is made
    # A pool that keeps its labels under another name than the format's 'label': the flag that reads them.
    renamed = [{"diagnosis" if k == "label" else k: v for k, v in row.items()} for row in rows]
    pool = write_pool(tmp_path / "diagnosis.parquet", renamed)
    for command in (["train", "--out", str(tmp_path / "m.pt"), *FAST], sim):
        assert main([*command, "--pool", pool]) == 2
        err = capsys.readouterr().err
        assert ("has no column 'label' (the default label column): name the column that holds the labels with "
                "--label-column; it has 'id', 'diagnosis', 'image', 'mask'\n") in err and err.count("\n") == 1, err
