"""The choice of the CUDA backend's ROI pass (projection, the default, or per-pixel): the setting and the
EGAL_CUDA_ROI_PASS variable, which work on any build. The passes themselves are compared on a GPU
(tests/test_scorer_cuda.py runs every test with both)."""
import os
import subprocess
import sys

import pytest

import egal

_core = egal._core


@pytest.fixture
def restore_roi_pass():
    previous = _core.cuda_roi_pass()
    yield
    _core.set_cuda_roi_pass(previous)


def test_projection_is_the_default_and_the_backends_report_the_pass(restore_roi_pass):
    if not os.environ.get("EGAL_CUDA_ROI_PASS"):
        assert _core.cuda_roi_pass() == "projection"
    _core.set_cuda_roi_pass("per-pixel")
    assert _core.cuda_roi_pass() == egal.backends()["cuda"]["roi_pass"] == "per-pixel"
    _core.set_cuda_roi_pass("projection")
    assert egal.backends()["cuda"]["roi_pass"] == "projection"


def test_an_unknown_pass_is_refused_and_changes_nothing(restore_roi_pass):
    _core.set_cuda_roi_pass("per-pixel")
    with pytest.raises(ValueError, match='"projection" or "per-pixel", not "pixels"'):
        _core.set_cuda_roi_pass("pixels")
    assert _core.cuda_roi_pass() == "per-pixel"


def _import_with(value):
    env = {**os.environ, "EGAL_CUDA_ROI_PASS": value}
    code = "import egal; print(egal.backends()['cuda']['roi_pass'])"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_the_variable_sets_the_pass_in_every_process_that_imports_egal():
    done = _import_with("per-pixel")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "per-pixel"


def test_a_bad_variable_is_a_warning_that_names_it_and_the_default_stays():
    done = _import_with("fast")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "projection"
    assert 'EGAL_CUDA_ROI_PASS ignored: the CUDA ROI pass is "projection" or "per-pixel", not "fast"' in done.stderr


def test_egal_backends_says_when_the_cuda_roi_pass_is_not_the_default():
    env = {**os.environ, "EGAL_CUDA_ROI_PASS": "per-pixel"}
    done = subprocess.run([sys.executable, "-m", "egal.cli", "backends"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    said = "masks and boxes take the per-pixel pass on CUDA (EGAL_CUDA_ROI_PASS)" in done.stdout
    assert said == egal.backends()["cuda"]["compiled"]
    env.pop("EGAL_CUDA_ROI_PASS")
    done = subprocess.run([sys.executable, "-m", "egal.cli", "backends"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert "EGAL_CUDA_ROI_PASS" not in done.stdout
