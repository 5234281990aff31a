"""`--weights imagenet` that cannot be obtained stops `egal train` / `egal simulate` with exit status 2,
a message that says what to do, and no traceback; it never trains from random weights instead."""
import os
import subprocess
import sys
import textwrap
import urllib.error

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
pytest.importorskip("torchvision")

from egal.cli import main  # noqa: E402
from egal.demo_data import make_synthetic_pool  # noqa: E402

FAST_TRAIN = ["--architecture", "resnet18", "--weights", "imagenet", "--input-size", "32", "--epochs", "1",
              "--embedding-dim", "8", "--k-shot", "2", "--n-query", "3", "--no-augment"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return str(make_synthetic_pool(tmp_path_factory.mktemp("pool"), 90, seed=0, image_size=32))


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty hub cache

    def offline(*args, **kwargs):  # and no network
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def _check_message(err, checkpoints):
    assert "resnet18" in err and "network is unreachable" in err
    assert "resnet18-f37072fd.pth" in err and str(checkpoints) in err
    assert "--weights /path/to/resnet18-f37072fd.pth" in err and "--weights none" in err
    assert "Traceback" not in err


def test_train_exits_2_with_the_hint_and_writes_no_model(pool, tmp_path, offline_hub, capsys):
    out = tmp_path / "model.pt"
    assert main(["train", "--pool", pool, "--out", str(out), "--quiet", *FAST_TRAIN]) == 2
    err = capsys.readouterr().err
    assert err.startswith("egal train: error: ")
    _check_message(err, offline_hub)
    assert not out.exists()


def test_simulate_exits_2_with_the_hint_and_records_no_run(pool, tmp_path, offline_hub, capsys):
    out = tmp_path / "results"
    args = ["simulate", "--pool", pool, "--out", str(out), "--quiet", "--strategies", "random", "--seeds", "1",
            "--rounds", "1", "--budget", "5", "--init", "12", "--group-column", "split", "--test-groups", "test",
            *FAST_TRAIN]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("egal simulate: error: ")
    _check_message(err, offline_hub)
    assert not (out / "runs").exists() or not list((out / "runs").glob("*.json"))


def test_the_egal_process_exits_2_without_a_traceback(pool, tmp_path):
    """The same through a real process, as a user runs it: torch's hub is made to fail in that process
    before the console entry point (egal.cli:main) runs."""
    script = textwrap.dedent("""
        import sys, urllib.error
        import torch.hub

        def offline(*args, **kwargs):
            raise urllib.error.URLError("network is unreachable")

        torch.hub.load_state_dict_from_url = offline
        from egal.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch_home")}
    done = subprocess.run([sys.executable, "-c", script, "train", "--pool", pool, "--out", str(tmp_path / "m.pt"),
                           "--quiet", *FAST_TRAIN], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    _check_message(done.stderr, tmp_path / "torch_home" / "hub" / "checkpoints")
    assert not (tmp_path / "m.pt").exists()
