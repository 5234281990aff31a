"""egal score --embeddings --diversity on a real Ray instance: the local engine's embeddings and batch."""
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("ray", reason="the Ray engine needs ray[data] (pip install 'egal-al[ray]')")
torch = pytest.importorskip("torch")

from egal.selection.embedding_file import vectors_of  # noqa: E402
from pools import make_rows, save_tiny_model, write_pool  # noqa: E402
from test_score_ray import ray_cluster  # noqa: E402, F401  (the module-scoped Ray head fixture)


def test_ray_engine_writes_the_local_engines_embeddings_and_batch(tmp_path, ray_cluster):  # noqa: F811
    model = save_tiny_model(tmp_path / "model.pt")
    rows = make_rows(40, folder=tmp_path, empty_every=7)
    for i, row in enumerate(rows):
        row["patient_id"] = f"p{i % 11}"
    rows[5]["image"] = b"corrupt"
    pool = write_pool(tmp_path / "pool.parquet", rows)
    address, env = ray_cluster

    def run(engine, out, *extra):
        cmd = [sys.executable, "-m", "egal.cli", "score", "--pool", pool, "--model", model, "--out", str(out),
               "--select", "8", "--batch-size", "8", "--engine", engine, "--embeddings", "--diversity", "kcenter",
               "--group-column", "patient_id", "--per-group", "1", "--quiet", *extra]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)

    local = run("local", tmp_path / "local.parquet", "--workers", "0")
    assert local.returncode == 0, local.stderr[-4000:]
    remote = run("ray", tmp_path / "ray.parquet", "--ray-address", address, "--workers", "2")
    assert remote.returncode == 0, remote.stderr[-4000:]
    a = pq.read_table(tmp_path / "local.embeddings.parquet")
    b = pq.read_table(tmp_path / "ray.embeddings.parquet")
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    x, y = vectors_of(a.column("embedding"), 64), vectors_of(b.column("embedding"), 64)
    assert np.isnan(x[5]).all() and np.isnan(y[5]).all()
    np.testing.assert_allclose(np.nan_to_num(y), np.nan_to_num(x), rtol=1e-5, atol=1e-6)
    assert (tmp_path / "local.selection.csv").read_text() == (tmp_path / "ray.selection.csv").read_text()
