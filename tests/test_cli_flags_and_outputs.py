"""What every command says in its errors (flags only, never the library's `name=VALUE (--flag)`), and the outputs it
checks before any work: a folder it cannot write in, a selection file named as another format, two outputs that
are one file."""
import os

import pytest

from egal.cli import main
from egal.commands._flags import errors_named_as_flags, flags_for
from egal.errors import EgalError, RunFailed
from pools import make_rows, write_pool


def raised_in(name_of, error):
    with pytest.raises(type(error)) as caught, errors_named_as_flags(name_of):
        raise error
    return caught.value


@pytest.mark.parametrize("library, command", [
    ("out 'x.csv' (--out) already exists: pass overwrite=True (--overwrite) to replace it, or choose another out",
     "--out 'x.csv' already exists: pass --overwrite to replace it, or choose another --out"),
    ("cannot resume: out 's.parquet' (--out) is a finished run; pass overwrite=True (--overwrite) instead of "
     "resume=True (--resume)", "cannot resume: --out 's.parquet' is a finished run; pass --overwrite instead of "
     "--resume"),
    ("--diversity only acts on a selection: add select=K (--select K)", "--diversity only acts on a selection: add "
     "--select K"),
    ("--group-column is needed with per_group (--per-group): the pool column", "--group-column is needed with "
     "--per-group: the pool column"),
    ("--pool is needed with group_column='patient_id' (--group-column): read", "--pool is needed with --group-column "
     "'patient_id': read"),
    # brackets that say something else than the argument before them are left as they are
    ("the embeddings file (--embeddings) 'e.parquet'", "the embeddings file (--embeddings) 'e.parquet'"),
    ("set data.cache_dir (--cache-dir)", "set data.cache_dir (--cache-dir)"),
])
def test_a_commands_errors_name_its_flags_alone(library, command):
    name_of = flags_for(["out", "overwrite", "resume", "select", "per_group", "group_column", "pool"])
    error = raised_in(name_of, EgalError(library))
    assert str(error) == command and isinstance(error, EgalError)


def test_a_failed_run_keeps_its_kind_and_cause_and_another_name_of_out_is_used():
    cause = OSError(28, "No space left on device")
    failed = RunFailed("a decoder died: rerun with resume=True (--resume); add workers=0 (--workers 0)")
    failed.__cause__ = cause
    error = raised_in(flags_for(["resume", "workers"]), failed)
    assert type(error) is RunFailed and error.__cause__ is cause
    assert str(error) == "a decoder died: rerun with --resume; add --workers 0"
    report = raised_in(lambda name: "--report" if name == "out" else None,
                       EgalError("out 'p' (--out) already holds report.html: or choose another out"))
    assert str(report) == "--report 'p' already holds report.html: or choose another --report"


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    pytest.importorskip("torch")
    from pools import save_tiny_model

    folder = tmp_path_factory.mktemp("scored")
    pool = write_pool(folder / "pool.parquet", make_rows(12, folder=folder, size=64))
    model = save_tiny_model(folder / "model.pt", input_size=(32, 32))
    assert main(["score", "--pool", pool, "--model", model, "--out", str(folder / "s.parquet"), "--select", "3",
                 "--workers", "0", "--quiet"]) == 0
    return {"pool": pool, "model": model, "scores": str(folder / "s.parquet"),
            "selection": str(folder / "s.selection.csv")}


def refused(capsys, argv, message):
    assert main([str(a) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.endswith(message + "\n") and captured.err.count("\n") == 1, captured.err
    return captured


def test_outputs_in_a_folder_that_takes_no_files_are_refused_before_any_work(scored, unwritable, tmp_path, capsys,
                                                                             monkeypatch):
    import egal.pipeline.model_runner

    def no_work(*args, **kwargs):
        raise AssertionError("the work began")

    monkeypatch.setattr(egal.pipeline.model_runner, "load_runner", no_work)  # the selection page's Grad-CAM
    its_folder = f"its folder {str(unwritable)!r} is not writable here"
    page = ["report", "--scores", scored["scores"], "--pool", scored["pool"], "--model", scored["model"]]
    refused(capsys, [*page, "--out", unwritable / "rep"], f"error: --out {str(unwritable / 'rep')!r}: {its_folder}")
    refused(capsys, [*page, "--out", unwritable], f"error: --out {str(unwritable)!r} is not writable here")
    (tmp_path / "ok").mkdir()
    refused(capsys, ["score", "--pool", scored["pool"], "--model", scored["model"], "--out", tmp_path / "ok" /
                     "s.parquet", "--report", unwritable / "rep"],
            f"error: --report {str(unwritable / 'rep')!r}: {its_folder}")
    assert os.listdir(tmp_path / "ok") == []
    refused(capsys, ["report", "--experiment", unwritable],
            f"error: experiment folder {str(unwritable)!r} is not writable here")
    refused(capsys, ["pool", "export-selection", "--pool", scored["pool"], "--selection", scored["selection"],
                     "--out", unwritable / "exp"], f"error: --out {str(unwritable / 'exp')!r}: {its_folder}")
    refused(capsys, ["demo", "--out", unwritable / "demo"],
            f"error: --out {str(unwritable / 'demo')!r}: {its_folder}")
    refused(capsys, ["simulate", "--pool", scored["pool"], "--out", unwritable / "sim"],
            f"error: --out {str(unwritable / 'sim')!r}: {its_folder}")
    assert os.listdir(unwritable) == []


def test_a_selection_is_written_under_a_csv_name_only(scored, tmp_path, capsys):
    refused(capsys, ["select", "--scores", scored["scores"], "--select", "2", "--out", tmp_path / "q.parquet"],
            f"error: --out is where the selection goes, as CSV: give a .csv name, got {str(tmp_path / 'q.parquet')!r}")
    refused(capsys, ["score", "--pool", scored["pool"], "--model", scored["model"], "--out", tmp_path / "s.parquet",
                     "--select", "2", "--select-out", tmp_path / "sel.parquet"],
            "error: --select-out is where the selection goes, as CSV: give a .csv name, got "
            f"{str(tmp_path / 'sel.parquet')!r}")
    assert os.listdir(tmp_path) == []
    for name in ("q.csv", "Q.CSV", "q"):  # no extension, or .csv in any case: a CSV's name
        assert main(["select", "--scores", scored["scores"], "--select", "2", "--out", str(tmp_path / name),
                     "--quiet"]) == 0
        assert (tmp_path / name).read_text().startswith("rank,id")


def test_two_outputs_of_one_run_at_one_path_are_named_as_such(scored, tmp_path, capsys):
    out = tmp_path / "so.parquet"
    for select_out in (out, tmp_path / "." / "so.parquet"):
        refused(capsys, ["score", "--pool", scored["pool"], "--model", scored["model"], "--out", out, "--select", "2",
                         "--select-out", select_out],
                f"error: --select-out {str(select_out)!r} is the same file as --out: the run writes both, and one "
                "would replace the other; give them different paths")
    assert os.listdir(tmp_path) == []
