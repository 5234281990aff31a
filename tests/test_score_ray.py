"""`egal score --engine ray` on a real Ray instance started on this machine: the local engine's results."""
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

pytest.importorskip("ray", reason="the Ray engine needs ray[data] (pip install 'egal-al[ray]')")
torch = pytest.importorskip("torch")

from egal.models import build_model, save_model  # noqa: E402
from pools import CLASSES, make_rows, write_pool  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray_bin = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    port = free_port()
    # A token-authenticated cluster, as Ray sets up by default: the CLI finds it through these variables.
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, env=env, capture_output=True, timeout=180)
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_ray_engine_matches_the_local_engine(tmp_path, ray_cluster):
    torch.manual_seed(2)
    model = tmp_path / "model.pt"
    save_model(build_model("tiny_cnn", "linear", CLASSES, input_size=(64, 64), in_channels=1), model)
    for part in range(2):  # two files, paths relative to each file's folder, a corrupt row
        folder = tmp_path / "pool" / f"part{part}"
        folder.mkdir(parents=True)
        rows = make_rows(30, folder=folder, storage="path", roi="mask_path", empty_every=6, seed=part,
                         id_prefix=f"p{part}")
        if part == 1:
            (folder / rows[4]["image_path"]).write_bytes(b"corrupt")
        write_pool(folder / "pool.parquet", rows)

    address, env = ray_cluster

    def run(engine, out, *extra):
        cmd = [sys.executable, "-m", "egal.cli", "score", "--pool", str(tmp_path / "pool"), "--model", str(model),
               "--out", str(out), "--select", "12", "--batch-size", "8", "--engine", engine, "--combine", "rank",
               *extra]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)

    local = run("local", tmp_path / "local.parquet")
    assert local.returncode == 0, local.stderr[-4000:]
    remote = run("ray", tmp_path / "ray.parquet", "--ray-address", address, "--workers", "2")
    assert remote.returncode == 0, remote.stderr[-4000:]
    a, b = pq.read_table(tmp_path / "local.parquet"), pq.read_table(tmp_path / "ray.parquet")
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    for name in ("pred", "rank", "status", "error"):
        assert a.column(name).to_pylist() == b.column(name).to_pylist(), name
    for name in ("entropy", "entropy_norm", "misalignment", "score"):
        x, y = a.column(name).to_numpy(zero_copy_only=False), b.column(name).to_numpy(zero_copy_only=False)
        assert ((abs(x - y) <= 1e-6) | ((x != x) & (y != y))).all(), name
    assert b.column("status").to_pylist().count("error") == 1
    assert (tmp_path / "local.selection.csv").read_text() == (tmp_path / "ray.selection.csv").read_text()
    # The terminal shows egal's lines only; Ray's own output is kept in a file next to the output.
    egal_lines = re.compile(r"^(pool: |model: |runtime: |Ray's own output goes to |\[\d\d:\d\d:\d\d\] scored )")
    assert all(egal_lines.match(line) for line in remote.stderr.splitlines()), remote.stderr[-4000:]
    assert "scored 60/60 rows" in remote.stderr
    assert (tmp_path / "ray.ray.log").stat().st_size > 0


def test_joining_ray_keeps_egals_sigterm_handler():
    # ray.init installs a handler that exits with status 15 at once: egal score --engine ray then stopped
    # without its message or status 143, and without the cleanup of Ctrl-C.
    import signal

    from egal.pipeline.ray_engine import sigterm_handler_kept

    def egals(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, egals)
    try:
        with sigterm_handler_kept():
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # what ray.init does
        assert signal.getsignal(signal.SIGTERM) is egals
    finally:
        signal.signal(signal.SIGTERM, previous)
