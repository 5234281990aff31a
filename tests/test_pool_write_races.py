"""The pools, exports and keys that egal pool writes, against a second run on the same output and against kills at
the worst moment (real processes, real signals; tests/hooked_runs.py): a run never replaces what another wrote
unasked, never mixes its files with another's, and a kill never leaves a pool paired with files it was not written
with."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hooked_runs
from egal.cli import main
from egal.importers import SourceError, add_labels, from_folders
from egal.pool.encode import encode_png
from pool_import_sources import write_csv

ROWS = 40
# After the output's Parquet file is complete and closed, before it is moved into place.
CLOSED = "pyarrow.parquet:ParquetWriter.close"


@pytest.fixture
def pool(tmp_path):
    rows = [{"id": f"s{i:02d}", "image": encode_png(np.full((8, 8), i, np.uint8)), "label": None}
            for i in range(ROWS)]
    for row, label in zip(rows[-3:], "abc", strict=True):  # the classes the labels bring
        row["label"] = label
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([("id", pa.string()), ("image", pa.binary()),
                                                                 ("label", pa.string())])), path)
    return path


def labels_file(tmp_path, name, label, ids):
    return write_csv(tmp_path / name, ["id", "label"], [[i, label] for i in ids])


def labels_of(path) -> dict:
    return {r["id"]: r["label"] for r in pq.read_table(path, columns=["id", "label"]).to_pylist()}


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_add_labels_runs_into_one_out_never_both_succeed(pool, tmp_path, overwrite, capsys):
    """Before, both runs said "Wrote r.parquet" and the one that renamed last replaced the other's labels: its
    check that --out did not exist was made long before its rename, and the rename replaced whatever was there."""
    first = labels_file(tmp_path, "first.csv", "a", ["s00", "s01"])
    second = labels_file(tmp_path, "second.csv", "b", ["s02", "s03"])
    out = tmp_path / "r.parquet"
    if overwrite:
        add_labels(pool, labels_file(tmp_path, "earlier.csv", "c", ["s04"]), out)
    flag = ["--overwrite"] if overwrite else []
    state = tmp_path / "state"
    slow = hooked_runs.start(["pool", "add-labels", pool, first, "--out", out, *flag], CLOSED, "pause", state)
    hooked_runs.wait_until_paused(slow, state)
    status = main(["pool", "add-labels", str(pool), str(second), "--out", str(out), *flag])
    code, _, err = hooked_runs.let_go(slow, state)
    assert (code, status) == (0, 2), err  # the second is refused at once: the first holds --out
    assert f"--out {str(out)!r} is being written by another egal now" in capsys.readouterr().err
    written = labels_of(out)
    assert {k: v for k, v in written.items() if v is not None and k < "s30"} == {"s00": "a", "s01": "a"}
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp-" in p.name) == []


def test_an_output_that_appears_while_add_labels_writes_is_kept_and_the_run_refused(pool, tmp_path, monkeypatch):
    """Another program (or an older egal, which takes no lock) writes --out while this run writes its copy: without
    --overwrite the copy is not renamed over it."""
    out = tmp_path / "r.parquet"
    close = pq.ParquetWriter.close

    def appears(writer):
        close(writer)
        out.write_bytes(b"written meanwhile")

    monkeypatch.setattr(pq.ParquetWriter, "close", appears)
    with pytest.raises(SourceError, match=r"--out '.*r.parquet' appeared while this run was writing it \(another "
                                          r"egal\?\): nothing written"):
        add_labels(pool, labels_file(tmp_path, "l.csv", "a", ["s00"]), out)
    assert out.read_bytes() == b"written meanwhile"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.csv", "pool.parquet", "r.parquet"]


def test_a_pool_that_appears_while_an_import_writes_is_kept_and_the_import_refused(tmp_path, monkeypatch):
    source = tmp_path / "data" / "benign"
    source.mkdir(parents=True)
    (source / "a.png").write_bytes(encode_png(np.zeros((8, 8), np.uint8)))
    out = tmp_path / "p.parquet"
    close = pq.ParquetWriter.close

    def appears(writer):
        close(writer)
        out.write_bytes(b"written meanwhile")

    monkeypatch.setattr(pq.ParquetWriter, "close", appears)
    with pytest.raises(SourceError, match="appeared while this run was writing it"):
        from_folders(tmp_path / "data", out, progress=False)
    assert out.read_bytes() == b"written meanwhile"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "p.parquet"]


def test_a_key_that_appears_while_an_export_is_written_is_kept_and_the_new_key_named(pool, tmp_path, monkeypatch):
    """Before, the key's rename replaced whatever had appeared at --pseudonym-key meanwhile (another export's key)."""
    from egal.importers import export_selection, pseudonyms

    key = tmp_path / "key.csv"
    write_key = pseudonyms.write_key

    def appears(path, pairs):
        key.write_text("pseudonym,id\n")  # another export's key, written meanwhile
        return write_key(path, pairs)

    monkeypatch.setattr(pseudonyms, "write_key", appears)
    with pytest.raises(SourceError, match=r"is written, but its pseudonym key could not be moved into place \(.*"
                                          r"appeared while this run was writing it.*\): it is '.*\.key\.csv\.tmp-.*', "
                                          r"the only key of that export"):
        export_selection(pool, tmp_path / "out", pseudonym_key=key, progress=False)
    assert key.read_text() == "pseudonym,id\n"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith(".key.csv.tmp-")]
    assert len(kept) == 1 and len(pseudonyms.read_key(kept[0])) == ROWS


def test_a_second_export_writing_the_same_key_is_refused_while_the_first_runs(pool, tmp_path):
    key = tmp_path / "key.csv"
    state = tmp_path / "state"
    slow = hooked_runs.start(["pool", "export-selection", "--pool", pool, "--out", tmp_path / "one",
                              "--pseudonym-key", key, "--quiet"], "egal.importers.pseudonyms:write_key", "pause", state)
    hooked_runs.wait_until_paused(slow, state)
    status = main(["pool", "export-selection", "--pool", str(pool), "--out", str(tmp_path / "two"),
                   "--pseudonym-key", str(key), "--quiet"])
    code, _, err = hooked_runs.let_go(slow, state)
    assert (code, status) == (0, 2), err
    assert not (tmp_path / "two").exists()
    from egal.importers import pseudonyms

    exported = {r.split(",")[0] for r in (tmp_path / "one" / "selection.csv").read_text().splitlines()[1:]}
    assert set(pseudonyms.read_key(key)) == exported


def hidden_temporaries(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


@pytest.fixture
def folders_dataset(tmp_path):
    for i in range(6):
        folder = tmp_path / "data" / ("benign" if i % 2 else "malignant")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"c{i}.png").write_bytes(encode_png(np.full((8, 8), 10 * i, np.uint8)))
    return tmp_path / "data"


def test_the_temporary_copies_a_killed_import_or_add_labels_left_are_removed_by_the_next_run(
        pool, folders_dataset, tmp_path):
    """Before, a SIGKILL left `.NAME.tmp-PID-RANDOM` (a copy of patient data) beside --out for good."""
    out = tmp_path / "p.parquet"
    hooked_runs.killed(["pool", "from-folders", folders_dataset, "--out", out, "--quiet"], CLOSED, tmp_path / "s1")
    hooked_runs.killed(["pool", "add-labels", pool, labels_file(tmp_path, "l.csv", "a", ["s00"]), "--out",
                        tmp_path / "r.parquet"], CLOSED, tmp_path / "s2")
    assert [n.split(".tmp-")[0] for n in hidden_temporaries(tmp_path)] == [".p.parquet", ".r.parquet"]
    assert not out.exists() and not (tmp_path / "r.parquet").exists()
    from_folders(folders_dataset, out, progress=False)
    assert [n.split(".tmp-")[0] for n in hidden_temporaries(tmp_path)] == [".r.parquet"]
    add_labels(pool, tmp_path / "l.csv", tmp_path / "r.parquet")
    assert hidden_temporaries(tmp_path) == []
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".lock")]


def test_a_running_writers_temporary_copy_is_never_taken_for_a_killed_runs(pool, tmp_path):
    state = tmp_path / "state"
    out = tmp_path / "r.parquet"
    slow = hooked_runs.start(["pool", "add-labels", pool, labels_file(tmp_path, "l.csv", "a", ["s00"]), "--out", out],
                             CLOSED, "pause", state)
    hooked_runs.wait_until_paused(slow, state)
    [copy] = hidden_temporaries(tmp_path)
    add_labels(pool, tmp_path / "l.csv", tmp_path / "other.parquet")  # another output of the same folder
    assert hidden_temporaries(tmp_path) == [copy]
    assert hooked_runs.let_go(slow, state)[0] == 0 and labels_of(out)["s00"] == "a"


def dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_copies_a_killed_brats_import_or_export_left_are_removed_by_the_next_run(pool, tmp_path):
    pytest.importorskip("nibabel")
    from pool_import_sources import brats_case

    brats_case(tmp_path / "data", "A", tumour=(6, 18, 22, 34, 10, 20))
    hooked_runs.killed(["pool", "from-brats", tmp_path / "data", "--out", tmp_path / "pool2.parquet", "--images-as",
                        "paths", "--quiet"], CLOSED, tmp_path / "s1")
    hooked_runs.killed(["pool", "export-selection", "--pool", pool, "--out", tmp_path / "out", "--quiet"],
                       "egal.importers.selection_export:_Writer.finish", tmp_path / "s2", when="before")
    left = hidden_temporaries(tmp_path)
    assert [n.split(".tmp-")[0] for n in left] == [".out", ".pool2.parquet", ".pool2_files"]
    assert (tmp_path / left[0]).is_dir() and (tmp_path / left[2]).is_dir()
    main(["pool", "from-brats", str(tmp_path / "data"), "--out", str(tmp_path / "pool2.parquet"), "--images-as",
          "paths", "--quiet"])
    main(["pool", "export-selection", "--pool", str(pool), "--out", str(tmp_path / "out"), "--quiet"])
    assert hidden_temporaries(tmp_path) == []


def test_a_key_whose_export_is_in_place_is_never_removed_and_the_next_run_names_it(pool, tmp_path, capsys):
    """Killed after the export was in place and before its key was: the key's only copy is its temporary file,
    which must outlive any cleanup of killed runs' copies."""
    from egal.importers import pseudonyms

    key, out = tmp_path / "key.csv", tmp_path / "out"
    command = ["pool", "export-selection", "--pool", pool, "--out", out, "--pseudonym-key", key, "--quiet"]
    hooked_runs.killed(command, "egal.importers.writer:Claim.publish", tmp_path / "s", when="before",
                       match=".key.csv.tmp-")
    [copy] = hidden_temporaries(tmp_path)
    assert (out / "selection.csv").is_file() and not key.exists()
    half = tmp_path / f".key.csv.tmp-{dead_pid()}-0123abcd"
    half.write_text("pseudonym,id\negal-")  # killed while writing it: no key, removed
    for overwrite in ([], ["--overwrite"]):
        assert main([*map(str, command), *overwrite]) == 2
    err = capsys.readouterr().err
    assert f"--pseudonym-key {str(key)!r} is not the key of the export at --out {str(out)!r}: a run was killed " in err
    assert f"kept as {str(tmp_path / copy)!r}, its only copy: move it to {str(key)!r}" in err
    (tmp_path / copy).rename(key)
    exported = {r.split(",")[0] for r in (out / "selection.csv").read_text().splitlines()[1:]}
    assert set(pseudonyms.read_key(key)) == exported  # the export and its key, together again
    assert main([*map(str, command), "--overwrite"]) == 0
    assert hidden_temporaries(tmp_path) == []


def files_of(folder) -> dict:
    import hashlib

    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def brats_paths_pool(tmp_path):
    """A from-brats pool whose images are files beside it (pool_files/), and its bytes and files."""
    pytest.importorskip("nibabel")
    from pool_import_sources import brats_case

    for case, seed in (("A", 0), ("B", 1)):
        brats_case(tmp_path / "data", case, tumour=(6, 18, 22, 34, 10, 20), seed=seed)
    out = tmp_path / "pool.parquet"
    assert main(["pool", "from-brats", str(tmp_path / "data"), "--out", str(out), "--images-as", "paths",
                 "--roi", "wt", "--min-roi-area", "20", "--quiet"]) == 0
    return out, out.read_bytes(), files_of(tmp_path / "pool_files")


# Killed while the new pool is checked (its files folder in place), then just before the pool is renamed in.
KILL_POINTS = [("egal.pool:open_pool", ".tmp-"), ("egal.importers.writer:Claim.publish", "")]


@pytest.mark.parametrize("target, match", KILL_POINTS)
def test_a_pool_killed_while_overwritten_is_never_paired_with_files_it_was_not_written_with(
        brats_paths_pool, tmp_path, target, match, capsys):
    """Before, the new files folder was swapped in, the new pool checked (long, on a large pool), and only then
    renamed in: a SIGKILL in between left the previous pool.parquet reading the new files, and `egal pool info`
    called it fine."""
    out, old_pool, old_files = brats_paths_pool
    command = ["pool", "from-brats", tmp_path / "data", "--out", out, "--images-as", "paths", "--roi", "tc",
               "--min-roi-area", "20", "--overwrite", "--quiet"]
    hooked_runs.killed(command, target, tmp_path / "state", when="before", match=match)
    assert not out.exists()  # no pool rather than a mismatched one
    [old_pool_copy] = [p for p in tmp_path.iterdir() if p.name.startswith(".pool.parquet.tmp-") and p.suffix == ".old"]
    assert old_pool_copy.read_bytes() == old_pool
    assert main(["pool", "info", str(out)]) == 2
    assert f"kept beside it as {old_pool_copy.name!r}" in capsys.readouterr().err
    # The next run without --overwrite says where the previous pool is, and how to get it back; writes nothing.
    assert main([*map(str, command[:-2]), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--out {str(out)!r} is missing: a run was killed while replacing it" in err
    assert f"rename {old_pool_copy.name!r} back to 'pool.parquet'" in err and "--overwrite" in err
    [old_files_copy] = [p for p in tmp_path.iterdir() if p.name.startswith(".pool_files.tmp-") and p.suffix == ".old"]
    assert f"{old_files_copy.name!r} back to 'pool_files' (in place of the one there now" in err
    assert files_of(old_files_copy) == old_files
    # Renamed back as said, the previous pool is whole again.
    import shutil

    shutil.rmtree(tmp_path / "pool_files")
    old_files_copy.rename(tmp_path / "pool_files")
    old_pool_copy.rename(out)
    assert main(["pool", "info", str(out)]) == 0 and files_of(tmp_path / "pool_files") == old_files
    # Killed again, then replaced with --overwrite: the set-aside copies go with the pool they held.
    hooked_runs.killed(command, target, tmp_path / "state2", when="before", match=match)
    assert main(list(map(str, command))) == 0
    assert hidden_temporaries(tmp_path) == [] and out.read_bytes() != old_pool
    assert main(["pool", "info", str(out), "--decode"]) == 0


def test_a_pool_whose_check_fails_while_overwritten_is_put_back_with_its_files(brats_paths_pool, tmp_path,
                                                                             monkeypatch):
    import egal.pool
    from egal.importers import from_brats
    from egal.pool.errors import PoolError

    out, old_pool, old_files = brats_paths_pool

    def failing(path, *args):
        raise PoolError("a check failed")

    monkeypatch.setattr(egal.pool, "open_pool", failing)
    with pytest.raises(PoolError, match="a check failed"):
        from_brats(tmp_path / "data", out, images_as="paths", roi="tc", min_roi_area=20, overwrite=True,
                   progress=False)
    assert out.read_bytes() == old_pool and files_of(tmp_path / "pool_files") == old_files
    assert hidden_temporaries(tmp_path) == []


# export-selection: the folder is written as a hidden temporary folder, then put in place.
FINISH = "egal.importers.selection_export:_Writer.finish"  # the images written, the tool's files not yet


def export_is_whole(folder) -> bool:
    """Every file the export's mark lists is there as written, and nothing else."""
    import json

    from egal.importers.selection_export import EXPORT_MARK, _files_of

    mark = folder / EXPORT_MARK
    return mark.is_file() and json.loads(mark.read_text())["files"] == _files_of(folder)


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_exports_into_one_folder_never_both_succeed(pool, tmp_path, overwrite, capsys):
    """Before, both said "Wrote": the later one deleted (shutil.rmtree) the complete export of the first."""
    out = tmp_path / "out"
    flag = ["--overwrite"] if overwrite else []
    if overwrite:
        assert main(["pool", "export-selection", "--pool", str(pool), "--out", str(out), "--quiet"]) == 0
    state = tmp_path / "state"
    slow = hooked_runs.start(["pool", "export-selection", "--pool", pool, "--out", out, "--to", "cvat", "--quiet",
                              *flag], FINISH, "pause", state, when="before")
    hooked_runs.wait_until_paused(slow, state)
    status = main(["pool", "export-selection", "--pool", str(pool), "--out", str(out), "--quiet", *flag])
    code, _, err = hooked_runs.let_go(slow, state)
    assert (code, status) == (0, 2), err
    assert f"--out {str(out)!r} is being written by another egal now" in capsys.readouterr().err
    assert export_is_whole(out) and (out / "annotations.xml").is_file()
    assert hidden_temporaries(tmp_path) == []


@pytest.mark.parametrize("what", ["a folder of files", "an empty folder"])
def test_a_folder_that_appears_at_out_while_exporting_is_kept_and_the_export_refused(pool, tmp_path, monkeypatch,
                                                                                     what):
    """Before, the export deleted whatever had appeared at --out meanwhile (shutil.rmtree) and took its place."""
    from egal.importers import export_selection
    from egal.importers.selection_export import _Writer

    out = tmp_path / "out"
    finish = _Writer.finish

    def appears(writer, chosen):
        out.mkdir()
        if what == "a folder of files":
            (out / "notes.txt").write_text("someone's")
        return finish(writer, chosen)

    monkeypatch.setattr(_Writer, "finish", appears)
    with pytest.raises(SourceError, match="--out '.*out' appeared while this run was writing it"):
        export_selection(pool, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == (["notes.txt"] if what == "a folder of files" else [])
    assert hidden_temporaries(tmp_path) == []


def test_an_empty_out_that_files_are_written_into_while_exporting_is_kept(pool, tmp_path, monkeypatch):
    from egal.importers import export_selection
    from egal.importers.selection_export import _Writer

    out = tmp_path / "out"
    out.mkdir()  # new or empty: an empty folder is taken
    finish = _Writer.finish

    def written_into(writer, chosen):
        (out / "notes.txt").write_text("someone's")
        return finish(writer, chosen)

    monkeypatch.setattr(_Writer, "finish", written_into)
    with pytest.raises(SourceError, match="--out '.*out' is no longer empty"):
        export_selection(pool, out, progress=False)
    assert (out / "notes.txt").read_text() == "someone's" and hidden_temporaries(tmp_path) == []


NO_RENAMEAT2 = "import egal._atomic; egal._atomic._libc_renameat2 = lambda: None"
# (target, when, match, setup, whether this egal reaches it): the moments of --overwrite's replacement.
OVERWRITE_KILLS = [
    ("os:replace", "before", "/out", "", False),  # an egal that deleted the old export, then renamed the new in
    ("egal._atomic:_renameat2", "after", ".out.tmp-", "", True),  # the folders just swapped, in one step
    ("shutil:rmtree", "after", ".out.tmp-", "", True),  # the replaced export deleted
    ("egal._atomic:set_aside", "after", "/out", NO_RENAMEAT2, True),  # without renameat2: the old one set aside
]


@pytest.mark.parametrize("target, when, match, setup, reached", OVERWRITE_KILLS)
def test_an_export_killed_while_overwritten_leaves_one_whole_export(pool, tmp_path, capsys, target, when, match,
                                                                   setup, reached):
    """Before, --overwrite deleted the old export, then renamed the new one in: a SIGKILL in between left no export
    and a hidden copy."""
    out = tmp_path / "out"
    assert main(["pool", "export-selection", "--pool", str(pool), "--out", str(out), "--quiet"]) == 0
    old = (out / "selection.csv").read_bytes()
    command = ["pool", "export-selection", "--pool", pool, "--out", out, "--to", "cvat", "--overwrite", "--quiet"]
    hooked_runs.killed(command, target, tmp_path / "state", when=when, match=match, setup=setup, must_fire=reached)
    if out.exists():
        assert export_is_whole(out)
    else:  # the old export, set aside whole, is named by the next run, which replaces it only with --overwrite
        [aside] = [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-") and p.suffix == ".old"]
        assert export_is_whole(aside) and (aside / "selection.csv").read_bytes() == old
        assert main(list(map(str, command[:-2]))) == 2
        assert f"rename {aside.name!r} back to 'out'" in capsys.readouterr().err and aside.is_dir()
    assert main(list(map(str, command))) == 0
    assert export_is_whole(out) and (out / "annotations.xml").is_file() and hidden_temporaries(tmp_path) == []
