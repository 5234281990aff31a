"""`egal score`, the command line over egal.score_pool: what it writes is the library's, what it adds is
tested here (exit statuses, what it prints, options named as flags, defaults taken from the library).
The scoring itself is tested through the library in test_score_pool.py."""
import csv
import dataclasses
import os
import re
import shlex

import numpy as np
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

import egal  # noqa: E402
from egal.cli import build_parser, main  # noqa: E402
from egal.models import load_model, save_model  # noqa: E402
from egal.pipeline.options import ScoreOptions  # noqa: E402
from pools import make_rows, save_tiny_model, shards_kept, write_pool  # noqa: E402

INPUT = (64, 64)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "model.pt", input_size=INPUT)


def score(*args):
    return main(["score", "--quiet", *map(str, args)])


def test_the_command_writes_what_score_pool_writes(tmp_path, model_path):
    rows = make_rows(23, folder=tmp_path, roi="boxes", empty_every=5)
    rows[4]["image"] = b"not an image"
    pool = write_pool(tmp_path / "pool.parquet", rows)
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "cli.parquet", "--alpha", 0.3,
                 "--combine", "rank", "--batch-size", 6, "--select", 8, "--workers", 0) == 0
    egal.score_pool(pool, model_path, out=str(tmp_path / "api.parquet"), alpha=0.3, combine="rank", batch_size=6,
                    select=8, workers=0, progress=False)
    assert (tmp_path / "cli.parquet").read_bytes() == (tmp_path / "api.parquet").read_bytes()
    assert (tmp_path / "cli.selection.csv").read_text() == (tmp_path / "api.selection.csv").read_text()


def test_the_defaults_are_the_librarys():
    args = build_parser().parse_args(["score", "--pool", "p.parquet"])
    for field in dataclasses.fields(ScoreOptions):
        if field.name in ("pool", "model"):
            continue
        value = (not args.quiet) if field.name == "progress" else getattr(args, field.name)
        assert value == field.default, field.name


def test_select_prints_the_summary_and_the_selection(tmp_path, model_path, capsys):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(30, folder=tmp_path, empty_every=4))
    out = tmp_path / "scores.parquet"
    assert main(["score", "--pool", pool, "--model", model_path, "--out", str(out), "--select", "7"]) == 0
    printed = capsys.readouterr()
    table = pq.read_table(out)
    unlabelled = ~np.array(table.column("labelled").to_pylist())  # make_rows labels every second row
    expected = egal.select_top_k(np.where(unlabelled, table.column("score").to_numpy(), np.nan),
                                 np.array(table.column("id").to_pylist()), 7)
    with open(tmp_path / "scores.selection.csv") as f:
        assert [r["id"] for r in csv.DictReader(f)] == list(expected)
    assert "15 row(s) that the pool already labels are scored but neither ranked nor selected" in printed.out
    assert f"The 7 images to annotate next (alpha=0.5), written to {tmp_path / 'scores.selection.csv'}" in printed.out
    assert all(i in printed.out for i in expected)
    assert "Scored 30 of 30 rows (0 in error)" in printed.out and "rows/s" in printed.out
    assert "scored 30/30 rows" in printed.err  # plain progress lines off a terminal


def test_rows_in_error_are_listed_and_the_run_succeeds(tmp_path, model_path, capsys):
    rows = make_rows(12, folder=tmp_path, roi="boxes")
    rows[3]["image"] = b"not an image at all"
    rows[11]["boxes"] = [[10, 10, 500, 40]]  # leaves the 80 x 80 image
    pool = write_pool(tmp_path / "pool.parquet", rows)
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "s.parquet") == 0
    out = capsys.readouterr().out
    assert "Scored 10 of 12 rows (2 in error)" in out
    assert re.search(r"Rows in error \(never selected\): scan_0003: image: .*; scan_0011: boxes: .*outside", out), out


def test_no_row_scored_is_exit_status_1(tmp_path, model_path, capsys):
    model = load_model(model_path)
    with torch.no_grad():  # finite weights whose logits overflow (a model with NaN weights is refused at load)
        model.head.fc.weight[1] = 1e38
        model.head.fc.bias[1] = 3e38
    broken = tmp_path / "broken.pt"
    save_model(model, broken)
    pool = write_pool(tmp_path / "pool.parquet", make_rows(9, folder=tmp_path))
    # No row could be scored: the output is written (it says why), and the exit status says it failed.
    assert score("--pool", pool, "--model", broken, "--out", tmp_path / "s.parquet", "--select", 3) == 1
    captured = capsys.readouterr()
    assert "none of the 9 rows could be scored" in captured.err
    assert "No image to annotate next" in captured.out
    assert pq.read_table(tmp_path / "s.parquet").num_rows == 9


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


def test_an_output_inside_a_folder_pool_is_refused(tmp_path, model_path, capsys):
    # Every *.parquet below a folder pool is part of it: scores written there would break the next run.
    folder = tmp_path / "pool"
    folder.mkdir()
    write_pool(folder / "part-0.parquet", make_rows(4, folder=folder))
    for extra in ((), ("--embeddings",)):
        assert score("--pool", folder, "--model", model_path, "--out", folder / "scores.parquet", *extra) == 2
        assert "is inside the folder pool" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["part-0.parquet"]


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
    err = capsys.readouterr().err
    assert err.startswith("egal score: error: ") and f"--out {str(out)!r} already exists: pass --overwrite to " \
        "replace it, or choose another path" in err
    assert out.read_bytes() == before
    unfinished = _unfinished_run(tmp_path, pool, model_path, out)
    assert score("--pool", pool, "--model", model_path, "--out", out) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and unfinished.is_dir()
    assert "resume=True" not in err and "overwrite=True" not in err  # the library's words: a command names flags


def _unfinished_run(tmp_path, pool, model_path, out, *extra):
    """The parts folder a run killed after its first batches leaves (scored elsewhere, then moved in place)."""
    other = tmp_path / "elsewhere.parquet"
    with shards_kept():
        assert score("--pool", pool, "--model", model_path, "--out", other, "--batch-size", 4, *extra) == 0
    parts = tmp_path / f"{out.name}.parts"
    os.rename(f"{other}.parts", parts)
    os.remove(parts / "part-000002.parquet")  # one batch missing: unfinished
    return parts


def test_overwrite_says_it_deleted_an_unfinished_run(tmp_path, model_path, capsys):
    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "s.parquet"
    parts = _unfinished_run(tmp_path, pool, model_path, out)
    capsys.readouterr()
    assert score("--pool", pool, "--model", model_path, "--out", out, "--overwrite", "--alpha", 0.2) == 0
    err = capsys.readouterr().err  # said even with --quiet
    assert "(--overwrite): deleted the unfinished run" in err and "2 scored batch(es)" in err and not parts.exists()


def test_a_run_in_progress_on_the_same_output_is_refused(tmp_path, model_path, capsys):
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
            err = capsys.readouterr().err
            assert f"another egal score is writing to --out {str(out)!r} now" in err
    finally:
        os.close(fd)


def test_resume_and_overwrite_exclude_each_other(tmp_path, model_path, capsys):
    pool = write_pool(tmp_path / "p.parquet", make_rows(3, folder=tmp_path))
    with pytest.raises(SystemExit) as exit_:
        score("--pool", pool, "--model", model_path, "--resume", "--overwrite")
    assert exit_.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_resume_of_a_finished_run(tmp_path, model_path, capsys):
    pool = write_pool(tmp_path / "p.parquet", make_rows(12, folder=tmp_path))
    out = tmp_path / "s.parquet"
    assert score("--pool", pool, "--model", model_path, "--out", out, "--alpha", 0.5) == 0
    before = out.read_bytes()
    # The very same arguments: nothing to do, and it says so.
    assert score("--pool", pool, "--model", model_path, "--out", out, "--alpha", 0.5, "--resume") == 0
    assert "12 of 12 rows scored (0 in error), by an earlier run with these arguments" in capsys.readouterr().out
    assert score("--pool", pool, "--model", model_path, "--out", out, "--alpha", 0.3, "--resume") == 2
    err = capsys.readouterr().err
    assert f"cannot resume: --out {str(out)!r} is a finished run that differs from this one in alpha (0.5 there, " \
        "0.3 here)" in err
    assert "; pass --overwrite instead of --resume to score again with these arguments, or choose another --out" in err
    assert out.read_bytes() == before


def test_a_resume_with_other_arguments_is_refused_before_the_runtime_check(tmp_path, model_path, capsys,
                                                                          monkeypatch):
    import json

    import egal.pipeline.scoring_job as scoring_job
    from egal.pipeline.run_record import recorded_run
    from egal.pipeline.shard_store import ShardStore

    pool = write_pool(tmp_path / "p.parquet", make_rows(8, folder=tmp_path))
    finished = tmp_path / "s.parquet"
    assert score("--pool", pool, "--model", model_path, "--out", finished, "--alpha", 0.5) == 0
    unfinished = tmp_path / "u.parquet"  # a run stopped before its first batch: the parts folder, no shard
    ShardStore(unfinished, recorded_run(finished)).release()
    capsys.readouterr()

    def runtime_check(*args, **kwargs):
        raise AssertionError("the runtime check ran (it scores a batch) before the arguments were compared")

    monkeypatch.setattr(scoring_job, "choose_runtime", runtime_check)
    assert score("--pool", pool, "--model", model_path, "--out", finished, "--alpha", 0.3, "--resume") == 2
    assert "finished run that differs from this one in alpha (0.5 there, 0.3 here)" in capsys.readouterr().err
    assert score("--pool", pool, "--model", model_path, "--out", unfinished, "--batch-size", 3, "--resume") == 2
    err = capsys.readouterr().err
    assert "differs from the unfinished one in" in err and "batch_size (32 there, 3 here)" in err
    assert json.loads((tmp_path / "u.parquet.parts" / "run.json").read_text()) == recorded_run(finished)
    # An explicit runtime and the embeddings are compared early too (they cost an export and a batch first).
    recorded = recorded_run(finished)["runtime"]
    other = "torch" if recorded == "onnxruntime" else "onnxruntime"
    assert score("--pool", pool, "--model", model_path, "--out", finished, "--alpha", 0.5, "--resume",
                 "--runtime", other) == 2
    assert f'runtime ("{recorded}" there, "{other}" here)' in capsys.readouterr().err
    assert score("--pool", pool, "--model", model_path, "--out", finished, "--alpha", 0.5, "--resume",
                 "--embeddings") == 2
    assert "embeddings (not recorded there" in capsys.readouterr().err
    # A run record that is JSON but not an object: the store's one line, not a traceback.
    monkeypatch.undo()
    (tmp_path / "u.parquet.parts" / "run.json").write_text("[1, 2]")
    assert score("--pool", pool, "--model", model_path, "--out", unfinished, "--resume") == 2
    assert "is unreadable" in capsys.readouterr().err


@pytest.mark.parametrize("flag,value", [("--alpha", 1.5), ("--batch-size", 0), ("--select", 0), ("--workers", -1),
                                        ("--select", -3), ("--device", "gpu"), ("--device", "cuda:one")])
def test_bad_options_are_refused_naming_the_flag(tmp_path, model_path, capsys, flag, value):
    pool = write_pool(tmp_path / "p.parquet", make_rows(3, folder=tmp_path))
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "never.parquet", flag, value) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"egal score: error: {flag} must "), err  # the flag, not the library's argument name
    assert not (tmp_path / "never.parquet").exists() and not (tmp_path / "never.parquet.parts").exists()


def test_scores_go_to_a_parquet_name_not_a_csv_one(tmp_path, model_path, capsys):
    pool = write_pool(tmp_path / "p.parquet", make_rows(3, folder=tmp_path))
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "scores.csv") == 2
    err = capsys.readouterr().err
    assert err.startswith("egal score: error: --out is where the scores go, as Parquet: give a .parquet name"), err
    assert not list(tmp_path.glob("scores.csv*"))


def test_a_scores_file_with_rows_cut_out_is_refused_not_taken_as_complete(tmp_path, model_path, capsys):
    # Rows removed by another tool, the run's record kept: resume and egal select must not take it for the pool.
    pool = write_pool(tmp_path / "pool.parquet", make_rows(20, folder=tmp_path))
    out = tmp_path / "scores.parquet"
    assert score("--pool", pool, "--model", model_path, "--out", out, "--workers", 0) == 0
    table = pq.read_table(out)
    pq.write_table(table.slice(0, 15).replace_schema_metadata(table.schema.metadata), out)
    capsys.readouterr()
    assert score("--pool", pool, "--model", model_path, "--out", out, "--workers", 0, "--resume") == 2
    assert "holds 15 row(s), but the run that wrote it scored a pool of 20" in capsys.readouterr().err
    assert main(["select", "--scores", str(out), "--select", "3", "--quiet"]) == 2
    assert "holds 15 row(s), but the run that wrote it scored a pool of 20" in capsys.readouterr().err


def test_a_file_size_limit_is_one_line_that_says_the_batches_are_kept(tmp_path, model_path, capsys, monkeypatch):
    import errno

    import egal.pipeline.shard_store as shard_store

    def too_large(self, *args, **kwargs):
        raise OSError(errno.EFBIG, "File too large", str(self.out_path))

    pool = write_pool(tmp_path / "pool.parquet", make_rows(12, folder=tmp_path))
    monkeypatch.setattr(shard_store.ShardStore, "finalize", too_large)
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "s.parquet", "--workers", 0) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("egal score: error: [Errno 27] File too large") and err.endswith("rerun with --resume"), err
    assert "\n" not in err


def test_egals_warnings_are_one_line_even_when_quiet(tmp_path, model_path, capsys):
    rows = make_rows(6, folder=tmp_path)
    rows[1]["label"] = "tumour"  # a class the model was not trained on
    pool = write_pool(tmp_path / "p.parquet", rows)
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "s.parquet", "--workers", 0) == 0
    err = capsys.readouterr().err
    assert err.startswith("egal score: warning: the pool labels rows with 1 class(es) that the model was not "
                          "trained on: 'tumour' (1 row)"), err
    assert err.count("\n") == 1 and "PoolLabelWarning" not in err


def test_a_selection_file_without_a_selection_is_refused(tmp_path, model_path, capsys):
    pool = write_pool(tmp_path / "p.parquet", make_rows(3, folder=tmp_path))
    assert score("--pool", pool, "--model", model_path, "--out", tmp_path / "s.parquet",
                 "--select-out", tmp_path / "picked.csv") == 2
    assert capsys.readouterr().err == "egal score: error: --select-out only acts on a selection: add --select K\n"
    assert not (tmp_path / "s.parquet").exists()
