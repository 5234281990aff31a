"""A scoring run killed with SIGKILL at random points and resumed ends exactly like an uninterrupted run."""
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from egal.models import build_model, save_model  # noqa: E402
from pools import CLASSES, make_rows, write_pool  # noqa: E402
from process_tags import describe, processes_tagged, wait_until_gone  # noqa: E402


def model_pool_and_reference(tmp_path):
    """A small model, a 160-row pool with boxes, and the output of an uninterrupted run on them."""
    torch.manual_seed(1)
    model = tmp_path / "model.pt"
    save_model(build_model("tiny_cnn", "linear", CLASSES, input_size=(64, 64), in_channels=1), model)
    pool = write_pool(tmp_path / "pool.parquet", make_rows(160, folder=tmp_path, roi="boxes"))
    reference = tmp_path / "reference.parquet"
    subprocess.run(egal_score(pool, model, reference), check=True, timeout=300)
    return model, pool, reference


def egal_score(pool, model, out, *extra):
    # --runtime torch: these tests stop a run halfway; the onnxruntime path scores this small pool in about a
    # second, fast enough to finish before a signal sent after the second shard arrives on a loaded machine.
    return [sys.executable, "-m", "egal.cli", "score", "--pool", str(pool), "--model", str(model), "--out", str(out),
            "--batch-size", "4", "--workers", "1", "--select", "10", "--quiet", "--runtime", "torch", *extra]


def shards(out) -> int:
    parts = f"{out}.parts"
    return sum(n.endswith(".parquet") for n in os.listdir(parts)) if os.path.isdir(parts) else 0


@pytest.fixture
def tagged():
    """Runs egal in processes whose environment carries a tag, so that every process they start
    (decoder workers, multiprocessing's resource tracker) can be found; at the end, none may be left."""
    tag = uuid.uuid4().hex
    env = {**os.environ, "EGAL_TEST_PROCESS_TAG": tag}
    yield env, lambda: processes_tagged(tag)
    left = wait_until_gone(tag)
    for process in left:  # the assertion below fails; do not leave them running either
        process.kill()
    assert not left, "processes left behind: " + "; ".join(describe(p) for p in left)


def test_sigkill_at_random_points_then_resume_matches_an_uninterrupted_run(tmp_path, tagged):
    env, running = tagged
    torch.manual_seed(1)
    model = tmp_path / "model.pt"
    save_model(build_model("tiny_cnn", "linear", CLASSES, input_size=(64, 64), in_channels=1), model)
    pool = write_pool(tmp_path / "pool.parquet", make_rows(240, folder=tmp_path, roi="boxes", empty_every=7))
    reference = tmp_path / "reference.parquet"
    subprocess.run(egal_score(pool, model, reference), check=True, timeout=300)

    out = tmp_path / "killed.parquet"
    rng = random.Random(20261126)
    kills_mid_run = 0
    for attempt in range(5):
        proc = subprocess.Popen(egal_score(pool, model, out, "--resume"), env=env)
        if attempt == 0:
            time.sleep(rng.uniform(0.2, 1.5))  # anywhere: start-up, opening the pool, the first batches
        else:  # after this run has written a random number of shards of its own: mid-run, whatever the speed
            target, deadline = shards(out) + rng.randint(1, 6), time.time() + 120
            while shards(out) < target and proc.poll() is None and time.time() < deadline:
                time.sleep(0.001)
        if proc.poll() is None:
            done = shards(out)
            if done:  # guards the check below: it sees the run's processes, its decoder worker among them
                assert len(running()) >= 2
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills_mid_run += 0 < done and not out.exists()
            # The decoder worker and multiprocessing's resource tracker die with the killed run.
            assert not wait_until_gone(env["EGAL_TEST_PROCESS_TAG"]), [describe(p) for p in running()]
        if out.exists() and not os.path.isdir(f"{out}.parts"):
            break
    assert kills_mid_run >= 2, "the kills should land while shards are being written"
    subprocess.run(egal_score(pool, model, out, "--resume"), check=True, timeout=300)

    assert not os.path.isdir(f"{out}.parts")
    # No row lost, none duplicated, the same numbers: the very same bytes as the uninterrupted run.
    assert pq.read_table(out).num_rows == 240
    assert out.read_bytes() == reference.read_bytes()
    assert (tmp_path / "killed.selection.csv").read_text() == (tmp_path / "reference.selection.csv").read_text()


def test_a_dead_decoder_worker_stops_the_run_cleanly_and_resume_finishes_it(tmp_path, tagged):
    psutil = pytest.importorskip("psutil")
    env, _ = tagged
    model, pool, reference = model_pool_and_reference(tmp_path)

    out = tmp_path / "out.parquet"
    proc = subprocess.Popen(egal_score(pool, model, out), stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while shards(out) == 0 and time.time() < deadline:  # decoding is under way
        time.sleep(0.01)
    workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if "spawn" in " ".join(c.cmdline())]
    assert workers, "expected a decoder worker process"
    for worker in workers:
        worker.kill()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "decoder worker process died" in err and "--resume" in err
    subprocess.run(egal_score(pool, model, out, "--resume"), check=True, timeout=300)
    assert out.read_bytes() == reference.read_bytes()


@pytest.mark.parametrize("stop", ["SIGTERM", "Ctrl-C"])
def test_sigterm_stops_the_run_like_ctrl_c_and_resume_finishes_it(tmp_path, tagged, stop):
    env, running = tagged
    model, pool, reference = model_pool_and_reference(tmp_path)

    out = tmp_path / "out.parquet"
    # A session of its own, as a terminal's foreground job: Ctrl-C reaches every process of the group. And SIGINT
    # at its default, as an interactive shell gives its jobs: a runner that starts pytest in the background (a
    # non-interactive `cmd &`) hands it down ignored, and a process that inherits SIGINT ignored keeps ignoring it.
    proc = subprocess.Popen(egal_score(pool, model, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while shards(out) < 2 and time.time() < deadline:  # mid-run, decoder worker busy
        time.sleep(0.01)
    assert proc.poll() is None and len(running()) >= 2
    if stop == "SIGTERM":
        proc.terminate()  # as a scheduler or `kill` sends it, to the main process alone
    else:
        os.killpg(proc.pid, signal.SIGINT)
    # communicate() returns only once every holder of the pipes is gone: no worker keeps them open.
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if stop == "SIGTERM" else 130), err
    said = "stopped by SIGTERM" if stop == "SIGTERM" else "interrupted"
    assert f"egal score: {said}; what was scored is kept: rerun with --resume to finish" in err, err
    assert "leaked" not in err and "Traceback" not in err, err
    assert 2 <= shards(out) < 40 and not out.exists()
    subprocess.run(egal_score(pool, model, out, "--resume"), check=True, timeout=300, env=env)
    assert out.read_bytes() == reference.read_bytes()
