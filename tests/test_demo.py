"""`egal demo`: the README's main command, end to end on a small pool (the default takes about 20 s)."""
import csv

import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")

from egal.cli import main  # noqa: E402


def test_demo_generates_trains_and_scores(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--images", "60", "--epochs", "2", "--select", "5", "--roi", "boxes"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    # Training shows its progress, as egal train does (log lines off a terminal).
    assert "epoch 1/2: loss" in captured.err and "epoch 2/2: loss" in captured.err
    for name in ("pool.parquet", "model.pt", "scores.parquet", "scores.selection.csv"):
        assert (out / name).is_file(), name
    pool = pq.read_table(out / "pool.parquet")
    assert {"id", "image", "boxes", "label"} <= set(pool.column_names)
    scores = pq.read_table(out / "scores.parquet")
    assert scores.column("id").to_pylist() == pool.column("id").to_pylist()
    with open(out / "scores.selection.csv") as f:
        assert len(list(csv.DictReader(f))) == 5
    assert "[3/3] egal score --pool" in printed and "Marker scans among the 5 selected" in printed
    assert "by EG-AL --combine rank" in printed
    # the model it wrote scores again from the command line (and through ONNX where exported)
    model = out / ("model.onnx" if (out / "model.onnx").exists() else "model.pt")
    assert main(["score", "--pool", str(out / "pool.parquet"), "--model", str(model), "--out",
                 str(tmp_path / "again.parquet"), "--quiet"]) == 0


def test_demo_scorer_only(capsys):
    assert main(["demo", "--scorer-only", "--samples", "64", "--select", "8"]) == 0
    printed = capsys.readouterr().out
    assert "fused CPU scorer" in printed and "selects 8;" in printed and "Among the 8 selected" in printed


@pytest.mark.parametrize("select", ["16", "30"])
def test_demo_scorer_only_refuses_a_selection_of_every_sample(capsys, select):
    # Both strategies would choose every sample, and the comparison would say nothing.
    assert main(["demo", "--scorer-only", "--samples", "16", "--select", select]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"egal demo: error: --select {select} must be smaller than --samples 16: choosing every " \
        "sample, EG-AL and entropy alone pick the same batch; lower --select or raise --samples\n"
    assert captured.out == ""


def test_demo_refuses_bad_options(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--labelled", "0"]) == 2
    assert "--labelled" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path), "--labelled", "1"]) == 2  # every row labelled: nothing to select
    assert "--labelled must lie in (0, 1), a share that leaves rows to select, got 1.0" in capsys.readouterr().err
