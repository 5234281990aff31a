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
