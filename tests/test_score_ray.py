"""`egal score --engine ray` on a real Ray instance started on this machine: the local engine's results."""
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile

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
    # Its session files in a folder of its own, removed afterwards (Ray's default, /tmp/ray, is never cleaned);
    # a short path, for Ray's sockets in it.
    temp = tempfile.mkdtemp(prefix="egal-test-", dir="/tmp")
    subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                    "--disable-usage-stats", f"--temp-dir={temp}/r"], check=True, env=env, capture_output=True,
                   timeout=180)
    try:
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


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


def test_a_ray_instance_egal_starts_keeps_its_files_private_and_removes_them(tmp_path):
    # Ray's default session folder is /tmp/ray, open to every user of the machine and never cleaned: the logs of
    # each run (naming the pool's files) stayed there.
    torch.manual_seed(3)
    model = tmp_path / "model.pt"
    save_model(build_model("tiny_cnn", "linear", CLASSES, input_size=(64, 64), in_channels=1), model)
    write_pool(tmp_path / "pool.parquet", make_rows(12, folder=tmp_path, storage="path", roi="mask_path", seed=4))
    # Ray follows TMPDIR for its default folder, as egal's private one does (a short one: Ray's socket paths
    # under it must fit in 107 bytes)
    temp = tempfile.mkdtemp(prefix="egal-test-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    env.update(TMPDIR=str(temp), RAY_USAGE_STATS_ENABLED="0")
    cmd = [sys.executable, "-m", "egal.cli", "score", "--pool", str(tmp_path / "pool.parquet"), "--model",
           str(model), "--out", str(tmp_path / "s.parquet"), "--engine", "ray", "--workers", "1"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-4000:]
        assert pq.read_table(tmp_path / "s.parquet").num_rows == 12
        left = sorted(os.listdir(temp))
        assert "ray" not in left and not [name for name in left if name.startswith("egal-")], left
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_the_private_session_folder_is_the_owners_alone(monkeypatch):
    from egal.pipeline.ray_engine import private_session_folder

    monkeypatch.delenv("RAY_TMPDIR", raising=False)
    with private_session_folder(True) as folder:
        parent = os.path.dirname(folder)
        assert os.path.dirname(parent) == tempfile.gettempdir()
        assert os.stat(parent).st_mode & 0o777 == 0o700
        os.makedirs(folder)  # Ray then opens its own folder to everyone: the parent still keeps others out
    assert not os.path.exists(parent)
    with private_session_folder(False) as folder:  # joining a cluster: its folder is the cluster's
        assert folder is None
    monkeypatch.setenv("TMPDIR", "/tmp/" + "x" * 60)  # too long for Ray's sockets under it: /tmp instead
    tempfile.tempdir = None  # (tempfile caches the folder it found)
    os.makedirs(os.environ["TMPDIR"], exist_ok=True)
    try:
        with private_session_folder(True) as folder:
            assert os.path.dirname(os.path.dirname(folder)) == "/tmp"
    finally:
        os.rmdir(os.environ["TMPDIR"])
        monkeypatch.undo()
        tempfile.tempdir = None
    monkeypatch.setenv("RAY_TMPDIR", "/somewhere")
    with private_session_folder(True) as folder:  # the user chose one
        assert folder is None
