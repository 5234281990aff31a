"""`egal score` end to end: real Parquet pools on disk, a real model file, the CLI entry point."""
import csv
import json
import os
import re
import shlex

import numpy as np
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

import egal  # noqa: E402
import egal.reference  # noqa: E402
from egal.cli import build_parser, main  # noqa: E402
from egal.gradcam import extract_gradcam_inputs  # noqa: E402
from egal.models import build_model, load_model, save_model  # noqa: E402
from egal.pool import DecodeSettings, load_pool_arrays  # noqa: E402

from pools import CLASSES, make_rows, write_pool  # noqa: E402

INPUT = (64, 64)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("tiny_cnn", "linear", CLASSES, input_size=INPUT, in_channels=1)
    with torch.no_grad():  # BatchNorm statistics away from the identity, so predictions vary
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(model, path)
    return str(path)


def score(*args):
    return main(["score", "--quiet", *map(str, args)])


def expected_scores(pool, model_path, alpha):
    """The same pool scored without the pipeline: whole-pool decode, Grad-CAM, the PyTorch reference."""
    model = load_model(model_path)
    arrays = load_pool_arrays(pool, DecodeSettings(input_size=INPUT, in_channels=1), columns=())
    inputs = extract_gradcam_inputs(model, torch.from_numpy(arrays["images"]))
    result = egal.reference.score_batch(**inputs.scorer_kwargs(), masks=arrays["masks"], alpha=alpha)
    return arrays, result


FORMATS = [  # (image encoding, ROI kind, storage)
    ("png", "mask", "inline"),
    ("rgb_png", "boxes", "inline"),
    ("jpeg", "boxes", "inline"),
    ("png16", "mask_path", "path"),
    ("dicom", "mask", "path"),
    ("png", "none", "inline"),
]


@pytest.mark.parametrize("image_format,roi,storage", FORMATS)
def test_scores_every_row_like_the_reference(tmp_path, model_path, image_format, roi, storage):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(37, folder=tmp_path, image_format=image_format, roi=roi,
                                                           storage=storage, empty_every=5))
    out = tmp_path / "scores.parquet"
    assert score("--pool", pool, "--model", model_path, "--out", out, "--batch-size", 8, "--alpha", 0.3,
                 "--workers", 0) == 0
    table = pq.read_table(out)
    assert table.column_names == ["id", "pred", "entropy", "entropy_norm", "misalignment", "score", "rank", "status",
                                  "error"]
    arrays, ref = expected_scores(pool, model_path, 0.3)
    assert table.column("id").to_pylist() == list(arrays["ids"])
    assert set(table.column("status").to_pylist()) == {"ok"}
    np.testing.assert_allclose(table.column("score").to_numpy(), ref.score, atol=2e-5)
    np.testing.assert_allclose(table.column("entropy_norm").to_numpy(), ref.entropy_norm, atol=2e-5)
    np.testing.assert_allclose(table.column("misalignment").to_numpy(), ref.misalignment, atol=2e-5)
    assert table.column("pred").to_pylist() == [CLASSES[p] for p in ref.pred]
    no_roi = ~arrays["has_roi"]
    assert no_roi.any() and (no_roi.all() if roi == "none" else not no_roi.all())
    assert np.isnan(table.column("misalignment").to_numpy()[no_roi]).all()
    ranks = table.column("rank").to_numpy()
    order = egal.select_top_k(table.column("score").to_numpy(), np.array(arrays["ids"]), 37)
    assert list(np.array(arrays["ids"])[np.argsort(ranks)]) == list(order)


def test_bad_rows_get_an_error_status_and_are_never_selected(tmp_path, model_path):
    rows = make_rows(20, folder=tmp_path, roi="boxes")
    rows[3]["image"] = b"not an image at all"
    rows[7]["image"] = rows[7]["image"][:60]  # truncated PNG
    rows[11]["boxes"] = [[10, 10, 500, 40]]  # leaves the 80 x 80 image
    rows[12]["boxes"] = [[30, 10, 20, 40]]  # x1 < x0
    pool = write_pool(tmp_path / "pool.parquet", rows)
    out, picked = tmp_path / "s.parquet", tmp_path / "pick.csv"
    assert score("--pool", pool, "--model", model_path, "--out", out, "--select", 20, "--select-out", picked,
                 "--batch-size", 6) == 0
    table = pq.read_table(out).to_pylist()
    bad = {3: "image", 7: "image", 11: "outside", 12: "box"}
    for i, row in enumerate(table):
        if i in bad:
            assert row["status"] == "error" and bad[i] in row["error"], row
            assert row["rank"] is None and row["pred"] is None
            assert row["score"] is None or np.isnan(row["score"])
        else:
            assert row["status"] == "ok" and row["error"] is None and row["rank"] >= 1
    with open(picked) as f:
        chosen = [r["id"] for r in csv.DictReader(f)]
    assert len(chosen) == 16 and not {rows[i]["id"] for i in bad} & set(chosen)


def test_non_finite_model_output_is_a_row_error(tmp_path, model_path, capsys):
    model = load_model(model_path)
    with torch.no_grad():
        model.head.fc.bias[1] = float("nan")
    broken = tmp_path / "broken.pt"
    save_model(model, broken)
    pool = write_pool(tmp_path / "pool.parquet", make_rows(9, folder=tmp_path))
    # No row could be scored: the output is written (it says why), and the exit status says it failed.
    assert score("--pool", pool, "--model", broken, "--out", tmp_path / "s.parquet", "--select", 3) == 1
    assert "none of the 9 rows could be scored" in capsys.readouterr().err
    table = pq.read_table(tmp_path / "s.parquet")
    assert set(table.column("status").to_pylist()) == {"error"}
    assert all("not finite" in e for e in table.column("error").to_pylist())


def test_select_writes_the_top_k_by_score_with_ties_by_id(tmp_path, model_path, capsys):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(30, folder=tmp_path, empty_every=4))
    out = tmp_path / "scores.parquet"
    assert main(["score", "--pool", pool, "--model", model_path, "--out", str(out), "--select", "7"]) == 0
    printed = capsys.readouterr()
    table = pq.read_table(out)
    expected = egal.select_top_k(table.column("score").to_numpy(), np.array(table.column("id").to_pylist()), 7)
    with open(tmp_path / "scores.selection.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == list(expected)
    assert [int(r["rank"]) for r in rows] == list(range(1, 8))
    assert list(rows[0]) == ["rank", "id", "score", "entropy_norm", "misalignment", "pred"]
    assert "The 7 images to annotate next" in printed.out and all(i in printed.out for i in expected)
    assert "Scored 30 of 30 rows (0 in error)" in printed.out and "rows/s" in printed.out
    assert "scored 30/30 rows" in printed.err  # plain progress lines off a terminal


def test_onnx_model_scores_like_the_pytorch_model(tmp_path, model_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "--model", model_path, "--out", str(onnx_path)]) == 0
    pool = write_pool(tmp_path / "pool.parquet", make_rows(25, folder=tmp_path, roi="boxes", empty_every=6))
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "pt.parquet", "--batch-size", 10) == 0
    assert score("--pool", pool, "--model", onnx_path, "--out", tmp_path / "ox.parquet", "--batch-size", 10) == 0
    a, b = pq.read_table(tmp_path / "pt.parquet"), pq.read_table(tmp_path / "ox.parquet")
    np.testing.assert_allclose(a.column("score").to_numpy(), b.column("score").to_numpy(), atol=1e-5)
    assert a.column("rank").to_pylist() == b.column("rank").to_pylist()


def test_directory_pool_with_paths_relative_to_each_file(tmp_path, model_path):
    for part in range(3):
        folder = tmp_path / "pool" / f"site{part}"
        folder.mkdir(parents=True)
        write_pool(folder / "part.parquet", make_rows(7, folder=folder, storage="path", roi="mask_path", seed=part,
                                                      id_prefix=f"site{part}"))
    out = tmp_path / "s.parquet"
    assert score("--pool", tmp_path / "pool", "--model", model_path, "--out", out, "--batch-size", 4) == 0
    table = pq.read_table(out)
    assert table.num_rows == 21 and set(table.column("status").to_pylist()) == {"ok"}
    assert table.column("id").to_pylist()[:2] == ["site0_0000", "site0_0001"]


# -- refusals: before any work, exit status 2, a message naming what is wrong, nothing written ------------

def _refused(tmp_path, model_path, capsys, pool, *extra):
    out = tmp_path / "never.parquet"
    assert score("--pool", pool, "--model", model_path, "--out", out, *extra) == 2
    assert not out.exists() and not (tmp_path / "never.parquet.parts").exists()
    return capsys.readouterr().err


def test_duplicate_ids_are_refused(tmp_path, model_path, capsys):
    rows = make_rows(10, folder=tmp_path)
    rows[6]["id"] = rows[2]["id"]
    err = _refused(tmp_path, model_path, capsys, write_pool(tmp_path / "p.parquet", rows))
    assert "unique" in err and rows[2]["id"] in err and "rows 2, 6" in err


def test_missing_image_column_is_refused(tmp_path, model_path, capsys):
    rows = [{k: v for k, v in r.items() if k != "image"} for r in make_rows(4, folder=tmp_path)]
    err = _refused(tmp_path, model_path, capsys, write_pool(tmp_path / "p.parquet", rows))
    assert "image" in err and "image_path" in err


def test_wrong_type_is_refused(tmp_path, model_path, capsys):
    rows = make_rows(4, folder=tmp_path)
    for i, r in enumerate(rows):
        r["id"] = i
    err = _refused(tmp_path, model_path, capsys, write_pool(tmp_path / "p.parquet", rows))
    assert "id" in err and "int64" in err


def test_path_escaping_the_pool_folder_is_refused(tmp_path, model_path, capsys):
    inner = tmp_path / "pool"
    inner.mkdir()
    rows = make_rows(5, folder=inner, storage="path")
    (tmp_path / "secret.png").write_bytes(b"x")
    rows[3]["image_path"] = "../secret.png"
    err = _refused(tmp_path, model_path, capsys, write_pool(inner / "p.parquet", rows))
    assert "../secret.png" in err and rows[3]["id"] in err


def test_missing_model_says_how_to_get_one(tmp_path, capsys):
    pool = write_pool(tmp_path / "p.parquet", make_rows(3, folder=tmp_path))
    assert main(["score", "--pool", pool]) == 2
    err = capsys.readouterr().err
    assert "egal demo --out" in err and "egal train" in err and "egal export" in err
    # Every command the hint suggests is one the parser accepts as written.
    suggested = re.findall(r"`egal ([^`]+)`", err)
    assert len(suggested) == 3
    for command in suggested:
        build_parser().parse_args(shlex.split(command))


def test_a_corrupt_onnx_model_is_a_message_not_a_traceback(tmp_path, model_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    pool = write_pool(tmp_path / "p.parquet", make_rows(3, folder=tmp_path))
    good = tmp_path / "model.onnx"
    assert main(["export", "--model", model_path, "--out", str(good)]) == 0
    capsys.readouterr()
    for name, data in (("truncated.onnx", good.read_bytes()[: good.stat().st_size // 2]), ("junk.onnx", b"not a model"),
                       ("empty.onnx", b"")):
        (tmp_path / name).write_bytes(data)
        assert score("--pool", pool, "--model", tmp_path / name, "--out", tmp_path / "s.parquet") == 2, name
        err = capsys.readouterr().err
        assert f"model file '{tmp_path / name}' cannot be loaded by onnxruntime" in err and "egal export" in err, err
        assert "Traceback" not in err and not (tmp_path / "s.parquet").exists()


def test_existing_output_and_unfinished_runs_are_protected(tmp_path, model_path, capsys):
    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "s.parquet"
    assert score("--pool", pool, "--model", model_path, "--out", out) == 0
    before = out.read_bytes()
    assert score("--pool", pool, "--model", model_path, "--out", out) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == before
    unfinished = _unfinished_run(tmp_path, pool, model_path, out)
    assert score("--pool", pool, "--model", model_path, "--out", out) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and unfinished.is_dir()


def _unfinished_run(tmp_path, pool, model_path, out, *extra):
    """The parts folder a run killed after its first batches leaves (scored elsewhere, then moved in place)."""
    other = tmp_path / "elsewhere.parquet"
    from egal.pipeline import shard_store

    keep = shard_store.shutil.rmtree
    shard_store.shutil.rmtree = lambda path: None  # the merge leaves its parts folder: a run killed after merging
    try:
        assert score("--pool", pool, "--model", model_path, "--out", other, "--batch-size", 4, *extra) == 0
    finally:
        shard_store.shutil.rmtree = keep
    parts = tmp_path / f"{out.name}.parts"
    os.rename(f"{other}.parts", parts)
    os.remove(parts / "part-000002.parquet")  # one batch missing: unfinished
    return parts


def test_overwrite_deletes_an_unfinished_run_and_says_so(tmp_path, model_path, capsys):
    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "s.parquet"
    parts = _unfinished_run(tmp_path, pool, model_path, out)
    capsys.readouterr()
    assert score("--pool", pool, "--model", model_path, "--out", out, "--overwrite", "--alpha", 0.2) == 0
    err = capsys.readouterr().err
    assert "deleted the unfinished run" in err and "2 scored batch(es)" in err
    assert not parts.exists() and pq.read_table(out).num_rows == 12


def test_overwrite_leaves_a_parts_folder_holding_foreign_files(tmp_path, model_path, capsys):
    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "s.parquet"
    parts = _unfinished_run(tmp_path, pool, model_path, out)
    (parts / "notes.txt").write_text("mine")
    assert score("--pool", pool, "--model", model_path, "--out", out, "--overwrite") == 2
    assert "notes.txt" in capsys.readouterr().err and (parts / "notes.txt").read_text() == "mine"
    assert (parts / "part-000000.parquet").exists()


def test_a_run_in_progress_on_the_same_output_is_never_joined_nor_deleted(tmp_path, model_path, capsys):
    import fcntl

    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "s.parquet"
    parts = _unfinished_run(tmp_path, pool, model_path, out, "--alpha", 0.5)
    fd = os.open(parts, os.O_RDONLY)  # what a run still scoring into it holds
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        capsys.readouterr()
        for flag in ("--resume", "--overwrite"):
            assert score("--pool", pool, "--model", model_path, "--out", out, "--batch-size", 4, flag) == 2
            assert "another egal score is writing to --out" in capsys.readouterr().err
            assert (parts / "part-000000.parquet").exists() and not out.exists()
    finally:
        os.close(fd)
    assert score("--pool", pool, "--model", model_path, "--out", out, "--batch-size", 4, "--resume") == 0
    assert pq.read_table(out).num_rows == 12 and not parts.exists()


def test_resume_and_overwrite_exclude_each_other(tmp_path, model_path, capsys):
    pool = write_pool(tmp_path / "p.parquet", make_rows(3, folder=tmp_path))
    with pytest.raises(SystemExit) as exit_:
        score("--pool", pool, "--model", model_path, "--resume", "--overwrite")
    assert exit_.value.code == 2 and "not allowed with" in capsys.readouterr().err


@pytest.mark.parametrize("change", ["alpha", "combine", "batch size", "model"])
def test_resume_of_a_finished_run_refuses_other_arguments(tmp_path, model_path, capsys, change):
    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "s.parquet"
    assert score("--pool", pool, "--model", model_path, "--out", out, "--alpha", 0.5) == 0
    before = out.read_bytes()
    # The very same arguments: nothing to do, and it says so.
    assert score("--pool", pool, "--model", model_path, "--out", out, "--alpha", 0.5, "--resume") == 0
    assert "by an earlier run with these arguments" in capsys.readouterr().out and out.read_bytes() == before
    other_model = tmp_path / "other.pt"
    model = load_model(model_path)
    with torch.no_grad():
        model.head.fc.bias.add_(0.5)
    save_model(model, other_model)
    changed = {"alpha": ["--model", model_path, "--alpha", 0.3], "combine": ["--model", model_path, "--combine", "rank"],
               "batch size": ["--model", model_path, "--batch-size", 5], "model": ["--model", other_model]}[change]
    assert score("--pool", pool, "--out", out, "--resume", *changed) == 2
    err = capsys.readouterr().err
    assert "finished run that differs" in err and change.split()[0] in err and "--overwrite" in err
    assert out.read_bytes() == before


def test_resume_refuses_a_finished_output_that_does_not_record_its_arguments(tmp_path, model_path, capsys):
    pool = write_pool(tmp_path / "p.parquet", make_rows(6, folder=tmp_path))
    out = tmp_path / "s.parquet"
    assert score("--pool", pool, "--model", model_path, "--out", out) == 0
    pq.write_table(pq.read_table(out).replace_schema_metadata({}), out)  # as written by an older egal
    assert score("--pool", pool, "--model", model_path, "--out", out, "--resume") == 2
    assert "does not record the arguments" in capsys.readouterr().err


def test_the_output_records_the_run_that_wrote_it(tmp_path, model_path):
    pool = write_pool(tmp_path / "p.parquet", make_rows(6, folder=tmp_path))
    out = tmp_path / "s.parquet"
    assert score("--pool", pool, "--model", model_path, "--out", out, "--alpha", 0.25, "--combine", "rank") == 0
    run = json.loads(pq.read_schema(out).metadata[b"egal.run"])
    assert run["alpha"] == 0.25 and run["combine"] == "rank" and run["batch_size"] == 32
    assert run["pool"]["num_rows"] == 6 and len(run["model_sha256"]) == 64


def test_resume_refuses_a_changed_run(tmp_path, model_path, capsys):
    from egal.pipeline.shard_store import ShardStore

    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "s.parquet"
    # An unfinished run with alpha 0.5: its manifest, no shards yet.
    assert score("--pool", pool, "--model", model_path, "--out", out, "--alpha", 0.5) == 0
    os.remove(out)
    ShardStore(out, {"alpha": 0.5, "note": "unfinished"})
    assert score("--pool", pool, "--model", model_path, "--out", out, "--alpha", 0.9, "--resume") == 2
    assert "alpha" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [("--alpha", 1.5), ("--batch-size", 0), ("--select", 0), ("--workers", -1)])
def test_bad_options_are_refused(tmp_path, model_path, capsys, flag, value):
    pool = write_pool(tmp_path / "p.parquet", make_rows(3, folder=tmp_path))
    assert score("--pool", pool, "--model", model_path, flag, value) == 2
    assert flag in capsys.readouterr().err
