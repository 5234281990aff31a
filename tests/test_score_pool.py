"""egal.score_pool, the library call behind `egal score`: real Parquet pools on disk, a real model file.

What the command line adds (exit statuses, printing, flag names) is tested in test_score_cli.py."""
import csv
import dataclasses
import inspect
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

import egal  # noqa: E402
import egal.reference  # noqa: E402
from egal import PoolScores, ScoreOptions, run_scoring, score_pool  # noqa: E402
from egal.gradcam import extract_gradcam_inputs  # noqa: E402
from egal.models import load_model, save_model  # noqa: E402
from egal.pipeline.shard_store import OutputError  # noqa: E402
from egal.pool import DecodeSettings, PoolError, load_pool_arrays  # noqa: E402
from pools import CLASSES, make_rows, save_tiny_model, shards_kept, write_pool  # noqa: E402

INPUT = (64, 64)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "model.pt", input_size=INPUT)


def quiet(pool, model, **options) -> PoolScores:
    return score_pool(pool, model, progress=False, **options)


def assert_same_table(a, b):
    assert a.column_names == b.column_names and a.num_rows == b.num_rows
    for name in a.column_names:
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        if a.schema.field(name).type == "double":
            assert np.array_equal(np.array(x, dtype=float), np.array(y, dtype=float), equal_nan=True), name
        else:
            assert x == y, name


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
    result = quiet(pool, model_path, out=out, batch_size=8, alpha=0.3, workers=0)
    assert (result.rows, result.rows_scored, result.rows_in_error) == (37, 37, 0)
    assert result.out == str(out) and result.selection is None and result.selection_path is None
    assert not result.resumed and not result.already_complete and result.seconds > 0
    table = pq.read_table(out)
    assert table.column_names == ["id", "pred", "entropy", "entropy_norm", "misalignment", "score", "rank", "status",
                                  "error", "labelled"]
    assert_same_table(result.table, table)
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
    # Rows the pool labels (every second one) are scored like the others but get no rank: they need no annotation.
    labelled = np.array([i % 2 == 1 for i in range(37)])
    assert table.column("labelled").to_pylist() == labelled.tolist()
    ranks = table.column("rank").to_numpy(zero_copy_only=False).astype(float)
    assert np.isnan(ranks[labelled]).all()
    order = egal.select_top_k(np.where(labelled, np.nan, table.column("score").to_numpy()), np.array(arrays["ids"]),
                              37)
    unranked = ~labelled
    assert list(np.array(arrays["ids"])[unranked][np.argsort(ranks[unranked])]) == list(order)


def test_bad_rows_get_an_error_status_and_are_never_selected(tmp_path, model_path):
    rows = make_rows(20, folder=tmp_path, roi="boxes")
    rows[3]["image"] = b"not an image at all"
    rows[7]["image"] = rows[7]["image"][:60]  # truncated PNG
    rows[11]["boxes"] = [[10, 10, 500, 40]]  # leaves the 80 x 80 image
    rows[12]["boxes"] = [[30, 10, 20, 40]]  # x1 < x0
    pool = write_pool(tmp_path / "pool.parquet", rows)
    out, picked = tmp_path / "s.parquet", tmp_path / "pick.csv"
    result = quiet(pool, model_path, out=out, select=20, select_out=picked, batch_size=6)
    assert (result.rows_scored, result.rows_in_error) == (16, 4) and result.selection_path == str(picked)
    assert [i for i, _ in result.errors()] == [rows[i]["id"] for i in (3, 7, 11, 12)]
    assert len(result.errors(limit=2)) == 2
    table = pq.read_table(out).to_pylist()
    bad = {3: "image", 7: "image", 11: "outside", 12: "box"}
    for i, row in enumerate(table):
        if i in bad:
            assert row["status"] == "error" and bad[i] in row["error"], row
            assert row["rank"] is None and row["pred"] is None
            assert row["score"] is None or np.isnan(row["score"])
        else:
            assert row["status"] == "ok" and row["error"] is None
            assert row["rank"] is None if row["labelled"] else row["rank"] >= 1
    with open(picked) as f:
        chosen = [r["id"] for r in csv.DictReader(f)]
    unlabelled_ok = [r["id"] for i, r in enumerate(table) if i not in bad and not r["labelled"]]
    assert sorted(chosen) == sorted(unlabelled_ok) and not {rows[i]["id"] for i in bad} & set(chosen)
    assert result.selection.column("id").to_pylist() == chosen


def test_non_finite_model_output_is_a_row_error(tmp_path, model_path):
    model = load_model(model_path)
    with torch.no_grad():  # finite weights whose logits overflow (a model with NaN weights is refused at load)
        model.head.fc.weight[1] = 1e38
        model.head.fc.bias[1] = 3e38
    broken = tmp_path / "broken.pt"
    save_model(model, broken)
    pool = write_pool(tmp_path / "pool.parquet", make_rows(9, folder=tmp_path))
    # No row could be scored: no exception, the output is written and says why.
    result = quiet(pool, broken, out=tmp_path / "s.parquet", select=3)
    assert (result.rows_scored, result.rows_in_error, result.selection.num_rows) == (0, 9, 0)
    table = pq.read_table(tmp_path / "s.parquet")
    assert set(table.column("status").to_pylist()) == {"error"}
    assert all("not finite" in e for e in table.column("error").to_pylist())


def test_select_writes_the_top_k_by_score_with_ties_by_id(tmp_path, model_path, capsys):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(30, folder=tmp_path, empty_every=4))
    out = tmp_path / "scores.parquet"
    result = score_pool(pool, model_path, out=out, select=7)
    table = pq.read_table(out)
    unlabelled = ~np.array(table.column("labelled").to_pylist())
    expected = egal.select_top_k(np.where(unlabelled, table.column("score").to_numpy(), np.nan),
                                 np.array(table.column("id").to_pylist()), 7)
    with open(tmp_path / "scores.selection.csv") as f:
        rows = list(csv.DictReader(f))
    assert result.selection_path == str(tmp_path / "scores.selection.csv")
    assert [r["id"] for r in rows] == list(expected) == result.selection.column("id").to_pylist()
    assert [int(r["rank"]) for r in rows] == list(range(1, 8))
    assert list(rows[0]) == ["rank", "id", "score", "entropy_norm", "misalignment", "pred"]
    printed = capsys.readouterr()
    assert printed.out == ""  # the library prints no summary: that is the command's
    assert "scored 30/30 rows" in printed.err and "pool: " in printed.err  # progress=True: lines off a terminal
    # progress=False: nothing at all
    quiet(pool, model_path, out=tmp_path / "again.parquet")
    assert capsys.readouterr() == ("", "")


def test_onnx_model_scores_like_the_pytorch_model(tmp_path, model_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from egal.onnx import export_onnx

    onnx_path = tmp_path / "model.onnx"
    export_onnx(load_model(model_path), str(onnx_path))
    pool = write_pool(tmp_path / "pool.parquet", make_rows(25, folder=tmp_path, roi="boxes", empty_every=6))
    a = quiet(pool, model_path, out=tmp_path / "pt.parquet", batch_size=10).table
    b = quiet(pool, onnx_path, out=tmp_path / "ox.parquet", batch_size=10).table
    np.testing.assert_allclose(a.column("score").to_numpy(), b.column("score").to_numpy(), atol=1e-5)
    assert a.column("rank").to_pylist() == b.column("rank").to_pylist()


def test_directory_pool_with_paths_relative_to_each_file(tmp_path, model_path):
    for part in range(3):
        folder = tmp_path / "pool" / f"site{part}"
        folder.mkdir(parents=True)
        write_pool(folder / "part.parquet", make_rows(7, folder=folder, storage="path", roi="mask_path", seed=part,
                                                      id_prefix=f"site{part}"))
    result = quiet(tmp_path / "pool", model_path, out=tmp_path / "s.parquet", batch_size=4)
    table = pq.read_table(tmp_path / "s.parquet")
    assert result.rows == table.num_rows == 21 and set(table.column("status").to_pylist()) == {"ok"}
    assert table.column("id").to_pylist()[:2] == ["site0_0000", "site0_0001"]


def test_workers_decode_like_the_main_process(tmp_path, model_path):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(30, folder=tmp_path, roi="boxes", empty_every=4))
    quiet(pool, model_path, out=tmp_path / "main.parquet", batch_size=8, workers=0, select=5)
    quiet(pool, model_path, out=tmp_path / "workers.parquet", batch_size=8, workers=2, select=5)
    assert (tmp_path / "main.parquet").read_bytes() == (tmp_path / "workers.parquet").read_bytes()
    assert (tmp_path / "main.selection.csv").read_text() == (tmp_path / "workers.selection.csv").read_text()


# -- arguments ---------------------------------------------------------------------------------------------

def test_score_pool_and_score_options_share_their_arguments_and_defaults():
    parameters = inspect.signature(score_pool).parameters
    fields = {f.name: f.default for f in dataclasses.fields(ScoreOptions)}
    assert list(parameters) == list(fields)
    for name, parameter in parameters.items():
        assert parameter.default == fields[name] or (parameter.default is inspect.Parameter.empty
                                                     and fields[name] is dataclasses.MISSING), name


def test_run_scoring_with_options_writes_what_score_pool_writes(tmp_path, model_path):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(12, folder=tmp_path))
    options = ScoreOptions(pool, model_path, out=str(tmp_path / "a.parquet"), alpha=0.25, select=4, progress=False)
    first = run_scoring(options)
    second = quiet(pool, model_path, out=tmp_path / "b.parquet", alpha=0.25, select=4)
    assert first.options == options
    assert_same_table(first.table, second.table)
    assert (tmp_path / "a.selection.csv").read_text() == (tmp_path / "b.selection.csv").read_text()


@pytest.mark.parametrize("options,error,name", [
    (dict(alpha=1.5), ValueError, "alpha"),
    (dict(alpha=True), TypeError, "alpha"),
    (dict(alpha=float("nan")), ValueError, "alpha"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=2.5), ValueError, "batch_size"),
    (dict(select=0), ValueError, "select"),
    (dict(workers=-1), ValueError, "workers"),
    (dict(combine="minmax"), ValueError, "combine"),
    (dict(device="tpu"), ValueError, "device"),
    (dict(device="cuda:"), ValueError, "device"),
    (dict(device="cuda:1", engine="ray"), ValueError, "device"),
    (dict(engine="spark"), ValueError, "engine"),
    (dict(resume=True, overwrite=True), ValueError, "resume"),
    (dict(progress="yes"), TypeError, "progress"),
    (dict(model=None), TypeError, "model"),
])
def test_bad_arguments_are_refused_by_their_api_name(tmp_path, model_path, options, error, name):
    pool = write_pool(tmp_path / "p.parquet", make_rows(3, folder=tmp_path))
    arguments = {"model": model_path, "out": tmp_path / "never.parquet", **options}
    with pytest.raises(error) as caught:
        score_pool(pool, arguments.pop("model"), **arguments)
    message = str(caught.value)
    assert message.startswith(name + " ") and "--" not in message, message
    assert caught.value.argument == name  # what the CLI renames to its flag
    assert not (tmp_path / "never.parquet").exists() and not (tmp_path / "never.parquet.parts").exists()


def test_a_bad_pool_is_refused_before_anything_is_written(tmp_path, model_path):
    rows = make_rows(10, folder=tmp_path)
    rows[6]["id"] = rows[2]["id"]
    pool = write_pool(tmp_path / "p.parquet", rows)
    with pytest.raises(PoolError, match="rows 2, 6"):
        quiet(pool, model_path, out=tmp_path / "never.parquet")
    assert not (tmp_path / "never.parquet").exists() and not (tmp_path / "never.parquet.parts").exists()
    good = write_pool(tmp_path / "good.parquet", make_rows(3, folder=tmp_path))
    with pytest.raises(FileNotFoundError, match="missing.pt' does not exist"):
        quiet(good, tmp_path / "missing.pt", out=tmp_path / "never.parquet")
    assert not (tmp_path / "never.parquet").exists() and not (tmp_path / "never.parquet.parts").exists()


def test_a_selection_file_not_named_as_csv_is_refused_from_python_before_anything_is_written(tmp_path, model_path):
    # CSV text under a .parquet name: refused by ScoreOptions itself, not only by `egal score`.
    pool = write_pool(tmp_path / "p.parquet", make_rows(6, folder=tmp_path))
    with pytest.raises(egal.EgalError, match=r"^select_out is where the selection goes, as CSV: give a \.csv "
                       r"name, got '.*x\.parquet'$") as caught:
        quiet(pool, model_path, out=tmp_path / "s.parquet", select=3, select_out=tmp_path / "x.parquet")
    assert caught.value.argument == "select_out"  # what the CLI renames to --select-out
    with pytest.raises(egal.EgalError, match="select_out is where the selection goes, as CSV"):
        ScoreOptions(pool=pool, model=model_path, out=tmp_path / "s.parquet", select=3, select_out="sel.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.parquet"]
    # Without select nothing would be written there: refused, as a selection option without a selection is.
    with pytest.raises(egal.EgalError, match=r"^select_out only acts on a selection: add select=K") as caught:
        ScoreOptions(pool=pool, model=model_path, select_out="sel.csv")
    assert caught.value.argument == "select_out"
    # .csv in any case, or none, is a CSV's name.
    for name in ("sel.csv", "SEL.CSV", "sel"):
        ScoreOptions(pool=pool, model=model_path, select=3, select_out=name)


def test_two_outputs_of_one_run_at_one_path_are_refused_as_such_from_python(tmp_path, model_path):
    pool = write_pool(tmp_path / "p.parquet", make_rows(6, folder=tmp_path))
    out = tmp_path / "s"  # no extension: a Parquet name and a CSV name both
    with pytest.raises(egal.EgalError, match=r"^select_out \(--select-out\) '.*s' is the same file as out \(--out\): "
                       "the run writes both, and one would replace the other; give them different paths$"):
        quiet(pool, model_path, out=out, select=3, select_out=out)
    # A link named as a CSV, to where the run's embeddings go.
    os.symlink(tmp_path / "s.embeddings.parquet", tmp_path / "sel.csv")
    with pytest.raises(egal.EgalError, match=r"^the embeddings file \(--embeddings\) '.*s\.embeddings\.parquet' is "
                       r"the same file as select_out \(--select-out\): the run writes both"):
        quiet(pool, model_path, out=out, select=3, select_out=tmp_path / "sel.csv", embeddings=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.parquet", "sel.csv"]


# -- the output: never overwritten unasked, resumed only with the same arguments ------------------------

def _unfinished_run(tmp_path, pool, model_path, out, **options):
    """The parts folder a run killed after its first batches leaves (scored elsewhere, then moved in place)."""
    other = tmp_path / "elsewhere.parquet"
    with shards_kept():
        quiet(pool, model_path, out=other, batch_size=4, **options)
    parts = tmp_path / f"{out.name}.parts"
    os.rename(f"{other}.parts", parts)
    os.remove(parts / "part-000002.parquet")  # one batch missing: unfinished
    return parts


def test_existing_output_and_unfinished_runs_are_protected(tmp_path, model_path):
    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "s.parquet"
    quiet(pool, model_path, out=out)
    before = out.read_bytes()
    with pytest.raises(OutputError, match=r"already exists: pass overwrite=True \(--overwrite\)"):
        quiet(pool, model_path, out=out)
    assert out.read_bytes() == before
    unfinished = _unfinished_run(tmp_path, pool, model_path, out)
    with pytest.raises(OutputError, match=r"resume=True \(--resume\) to finish it .* overwrite=True"):
        quiet(pool, model_path, out=out)
    assert unfinished.is_dir()


def test_resume_finishes_an_unfinished_run_like_an_uninterrupted_one(tmp_path, model_path, capsys):
    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path))
    reference = quiet(pool, model_path, out=tmp_path / "reference.parquet", batch_size=4, select=5)
    out = tmp_path / "s.parquet"
    parts = _unfinished_run(tmp_path, pool, model_path, out)
    result = score_pool(pool, model_path, out=out, batch_size=4, select=5, resume=True)
    assert "resuming: 2 of 3 batches already scored" in capsys.readouterr().err
    assert result.resumed and not result.already_complete and not parts.exists()
    assert out.read_bytes() == (tmp_path / "reference.parquet").read_bytes()
    assert_same_table(result.selection, reference.selection)


def test_resume_scores_an_unreadable_shard_again(tmp_path, model_path, capsys):
    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path))
    quiet(pool, model_path, out=tmp_path / "reference.parquet", batch_size=4)
    out = tmp_path / "s.parquet"
    parts = _unfinished_run(tmp_path, pool, model_path, out)
    (parts / "part-000001.parquet").write_bytes(b"PAR1 cut short by a disk fault")
    result = score_pool(pool, model_path, out=out, batch_size=4, resume=True)
    err = capsys.readouterr().err
    assert "part-000001.parquet cannot be read" in err and "resuming: 1 of 3 batches already scored" in err
    assert result.resumed and out.read_bytes() == (tmp_path / "reference.parquet").read_bytes()


def test_overwrite_deletes_an_unfinished_run_and_says_so(tmp_path, model_path, capsys):
    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "s.parquet"
    parts = _unfinished_run(tmp_path, pool, model_path, out)
    capsys.readouterr()
    quiet(pool, model_path, out=out, overwrite=True, alpha=0.2)
    err = capsys.readouterr().err
    assert "deleted the unfinished run" in err and "2 scored batch(es)" in err
    assert not parts.exists() and pq.read_table(out).num_rows == 12


def test_overwrite_leaves_a_parts_folder_holding_foreign_files(tmp_path, model_path):
    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "s.parquet"
    parts = _unfinished_run(tmp_path, pool, model_path, out)
    (parts / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="notes.txt"):
        quiet(pool, model_path, out=out, overwrite=True)
    assert (parts / "notes.txt").read_text() == "mine" and (parts / "part-000000.parquet").exists()


def test_a_run_in_progress_on_the_same_output_is_never_joined_nor_deleted(tmp_path, model_path):
    import fcntl

    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "s.parquet"
    parts = _unfinished_run(tmp_path, pool, model_path, out, alpha=0.5)
    fd = os.open(parts, os.O_RDONLY)  # what a run still scoring into it holds
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        for flag in ("resume", "overwrite"):
            with pytest.raises(OutputError, match="another egal score is writing to out"):
                quiet(pool, model_path, out=out, batch_size=4, **{flag: True})
            assert (parts / "part-000000.parquet").exists() and not out.exists()
    finally:
        os.close(fd)
    assert quiet(pool, model_path, out=out, batch_size=4, resume=True).rows == 12 and not parts.exists()


@pytest.mark.parametrize("change", ["alpha", "combine", "batch size", "model"])
def test_resume_of_a_finished_run_refuses_other_arguments(tmp_path, model_path, change):
    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "s.parquet"
    quiet(pool, model_path, out=out, alpha=0.5)
    before = out.read_bytes()
    # The very same arguments: nothing to do.
    again = quiet(pool, model_path, out=out, alpha=0.5, resume=True)
    assert again.already_complete and again.rows == 12 and again.seconds == 0 and out.read_bytes() == before
    other_model = tmp_path / "other.pt"
    model = load_model(model_path)
    with torch.no_grad():
        model.head.fc.bias.add_(0.5)
    save_model(model, other_model)
    changed = {"alpha": (model_path, {"alpha": 0.3}), "combine": (model_path, {"combine": "rank"}),
               "batch size": (model_path, {"batch_size": 5}), "model": (other_model, {})}[change]
    with pytest.raises(OutputError) as caught:
        quiet(pool, changed[0], out=out, resume=True, **changed[1])
    message = str(caught.value)
    assert "finished run that differs" in message and change.split()[0] in message and "overwrite=True" in message
    assert out.read_bytes() == before


def test_resume_refuses_a_finished_output_that_does_not_record_its_arguments(tmp_path, model_path):
    pool = write_pool(tmp_path / "p.parquet", make_rows(6, folder=tmp_path))
    out = tmp_path / "s.parquet"
    quiet(pool, model_path, out=out)
    pq.write_table(pq.read_table(out).replace_schema_metadata({}), out)  # as written by an older egal
    with pytest.raises(OutputError, match="does not record the arguments"):
        quiet(pool, model_path, out=out, resume=True)


def test_the_output_records_the_run_that_wrote_it(tmp_path, model_path):
    pool = write_pool(tmp_path / "p.parquet", make_rows(6, folder=tmp_path))
    out = tmp_path / "s.parquet"
    quiet(pool, model_path, out=out, alpha=0.25, combine="rank")
    run = json.loads(pq.read_schema(out).metadata[b"egal.run"])
    assert run["alpha"] == 0.25 and run["combine"] == "rank" and run["batch_size"] == ScoreOptions.batch_size
    assert run["pool"]["num_rows"] == 6 and len(run["model_sha256"]) == 64


def test_resume_refuses_a_changed_run(tmp_path, model_path):
    from egal.pipeline.shard_store import ShardStore

    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "s.parquet"
    # An unfinished run with alpha 0.5: its manifest, no shards yet.
    ShardStore(out, {"alpha": 0.5, "note": "unfinished"}).release()
    with pytest.raises(OutputError, match=r"alpha \(0.5 there, 0.9 here\)"):
        quiet(pool, model_path, out=out, alpha=0.9, resume=True)


def test_a_run_stopped_while_deleting_its_shards_or_writing_its_output_leaves_nothing_stuck(tmp_path, model_path,
                                                                                           monkeypatch):
    # Stopped halfway through deleting the parts folder, a run left one without its run.json: --resume called
    # it unreadable and a new run called it unfinished, so a scheduled job failed until someone deleted it.
    import shutil

    import egal.pipeline.shard_store as shard_store

    pool = write_pool(tmp_path / "pool.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "s.parquet"
    real_rmtree = shutil.rmtree

    def stopped(path, **kwargs):
        os.remove(os.path.join(path, "run.json"))  # the first files go, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(shard_store.shutil, "rmtree", stopped)
    with pytest.raises(KeyboardInterrupt):
        quiet(pool, model_path, out=out, batch_size=4, workers=0)
    monkeypatch.setattr(shard_store.shutil, "rmtree", real_rmtree)
    assert out.is_file() and not (tmp_path / "s.parquet.parts").exists()
    assert quiet(pool, model_path, out=out, batch_size=4, workers=0, resume=True).already_complete
    leftovers = lambda: sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("s.parquet."))  # noqa: E731
    assert leftovers() == []  # the renamed folder is removed by the next run
    # A copy of the output that a killed run was writing is removed by the next run that holds the lock.
    (tmp_path / "s.parquet.tmp-99999-0123abcd").write_bytes(b"half an output")
    (tmp_path / "s.parquet.tmp-notes.txt").write_bytes(b"a user's file")
    quiet(pool, model_path, out=out, batch_size=4, workers=0, overwrite=True)
    assert leftovers() == ["s.parquet.tmp-notes.txt"]


def test_resume_refuses_a_pool_whose_image_files_changed_since(tmp_path, model_path):
    # A paths pool was fingerprinted by its Parquet files alone: an image replaced between a killed run and its
    # resume was scored anew in the missing batches while the kept ones held the old image's scores.
    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path, storage="path"))
    out = tmp_path / "s.parquet"
    parts = _unfinished_run(tmp_path, pool, model_path, out)
    image = tmp_path / "images" / "scan_0001.bin"
    image.write_bytes(image.read_bytes() + b"\0")  # still a readable PNG, one byte longer
    with pytest.raises(OutputError, match="pool"):
        quiet(pool, model_path, out=out, batch_size=4, resume=True)
    assert parts.exists()


def _relabelled(rows, old, new):
    return [{**row, "label": new if row["label"] == old else row["label"]} for row in rows]


def test_labels_the_model_has_no_class_for_are_warned_with_their_counts(tmp_path, model_path, capsys):
    rows = _relabelled(make_rows(12, folder=tmp_path), "normal", "tumour")  # rows 5 and 11
    pool = write_pool(tmp_path / "pool.parquet", rows)
    with pytest.warns(egal.pipeline.scoring_job.PoolLabelWarning) as caught:
        result = quiet(pool, model_path, out=tmp_path / "s.parquet", workers=0)
    expected = ("the pool labels rows with 1 class(es) that the model was not trained on: 'tumour' (2 rows) (column "
                "'label'; the model's classes: 'benign', 'malignant', 'normal'); is this the model trained on this "
                "pool?")
    assert [str(w.message) for w in caught] == [expected] and result.warnings == (expected,)
    # With progress, the run's log says it instead, once, as a line of its own.
    result = score_pool(pool, model_path, out=tmp_path / "s.parquet", workers=0, overwrite=True)
    assert capsys.readouterr().err.count(f"warning: {expected}\n") == 1 and result.warnings == (expected,)


def test_labels_that_read_like_a_missing_value_are_said_to_count_as_labels(tmp_path, model_path):
    rows = [{**row, "label": "nan" if row["label"] is None else row["label"]} for row in make_rows(8, folder=tmp_path)]
    rows[0]["label"] = " None"
    pool = write_pool(tmp_path / "pool.parquet", rows)
    with pytest.warns(egal.pipeline.scoring_job.PoolLabelWarning) as caught:
        result = quiet(pool, model_path, out=tmp_path / "s.parquet", workers=0, select=2)
    # The rows stay labelled (the documented rule), so none can be selected; the warning says why, and alone: a
    # label reading like a missing value is not also listed as a class the model does not know.
    assert result.selection.num_rows == 0 and all(result.table.column("labelled").to_pylist())
    assert [str(w.message) for w in caught] == [
        "label(s) of column 'label' that read like a missing value count as labels: 'nan' (3 rows), ' None' (1 row); "
        "those rows are never selected. If they mean no label, the pool should hold null there"]


def test_a_pool_whose_labels_are_the_models_classes_is_not_warned(tmp_path, model_path, recwarn):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(6, folder=tmp_path))
    result = quiet(pool, model_path, out=tmp_path / "s.parquet", workers=0)
    assert result.warnings == () and not [w for w in recwarn if w.category.__module__.startswith("egal")]


def test_pool_scores_prints_as_one_short_line(tmp_path, model_path):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(6, folder=tmp_path))
    out = tmp_path / "s.parquet"
    result = quiet(pool, model_path, out=out, workers=0, select=2)
    assert repr(result) == (f"PoolScores(out={str(out)!r}, rows=6, scored=6, errors=0, selected=2, "
                            f"selection_path={str(tmp_path / 's.selection.csv')!r})")
