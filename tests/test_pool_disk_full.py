"""egal pool add-labels and export-selection on a disk that cannot take what they write: one line that names the
output and says what it holds now (before, only "[Errno 27] File too large"), the disk's exit status 1, the earlier
output as it was and no partial file beside it."""
import csv
import os

import pyarrow.parquet as pq
import pytest

from egal.cli import main
from file_size_limit import egal_limited
from pools import make_rows, write_pool

TOO_LARGE = "could not be written: the file grew past the largest size this system allows"


@pytest.fixture
def pool_and_labels(tmp_path):
    pool = write_pool(tmp_path / "pool.parquet", make_rows(24, roi="boxes", folder=tmp_path))
    table = pq.read_table(pool, columns=["id", "label"]).to_pylist()
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows([("id", "label"), *((r["id"], "benign") for r in table if r["label"] is None)])
    return pool, labels


def _said(done, out, kept: str):
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert f"error: --out {str(out)!r} {TOO_LARGE}" in done.stderr and f"; {kept};" in done.stderr, done.stderr
    assert done.returncode == 1


def test_add_labels_names_the_pool_it_could_not_write(tmp_path, pool_and_labels):
    pool, labels = pool_and_labels
    before = sorted(os.listdir(tmp_path))
    out = tmp_path / "labelled.parquet"
    limit = os.path.getsize(pool) // 2
    _said(egal_limited(limit, "pool", "add-labels", pool, labels, "--out", out), out, "nothing was written there")
    assert sorted(os.listdir(tmp_path)) == before
    assert main(["pool", "add-labels", str(pool), str(labels), "--out", str(out), "--quiet"]) == 0
    kept = out.read_bytes()
    _said(egal_limited(limit, "pool", "add-labels", pool, labels, "--out", out, "--overwrite"), out,
          "nothing was replaced, it holds what it held before")
    assert out.read_bytes() == kept and sorted(os.listdir(tmp_path)) == sorted([*before, out.name])


def _files(folder):
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(folder) for f in files}


@pytest.mark.parametrize("to", ["folders", "label-studio"])
def test_export_selection_names_the_folder_it_could_not_write(tmp_path, pool_and_labels, to):
    pool, _ = pool_and_labels
    before = sorted(os.listdir(tmp_path))
    out = tmp_path / "round1"
    export = ["pool", "export-selection", "--pool", str(pool), "--to", to, "--out", str(out)]
    _said(egal_limited(1000, *export), out, "nothing was written there")  # 1000 bytes: not one image
    assert sorted(os.listdir(tmp_path)) == before
    assert main([*export, "--quiet"]) == 0
    kept = _files(out)
    _said(egal_limited(1000, *export, "--overwrite"), out, "nothing was replaced, it holds what it held before")
    assert _files(out) == kept and sorted(os.listdir(tmp_path)) == sorted([*before, out.name])
