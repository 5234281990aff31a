"""The choice of the CUDA backend's passes: the ROI pass (projection, the default, per-pixel or vector-projection)
and the map pass (cell-blocks, the default, channel-warps or channel-tiles), each a setting and an EGAL_CUDA_*
variable that work on any build.
The passes themselves are compared on a GPU (tests/test_scorer_cuda.py runs every test with each), and the
kernels' logic on the CPU (tests/test_cuda_emulated.py)."""
import os
import subprocess
import sys
from typing import NamedTuple

import pytest

import egal

_core = egal._core


class Pass(NamedTuple):
    key: str  # in egal.backends()["cuda"]
    variable: str
    names: tuple  # the default first
    other: str
    said: str  # what `egal backends` prints when the other is set

    @property
    def default(self):
        return self.names[0]

    def get(self):
        return getattr(_core, f"cuda_{self.key}")()

    def set(self, name):
        getattr(_core, f"set_cuda_{self.key}")(name)


ROI_PASSES = ("projection", "per-pixel", "vector-projection")
MAP_PASSES = ("cell-blocks", "channel-warps", "channel-tiles")
PASSES = [*(Pass("roi_pass", "EGAL_CUDA_ROI_PASS", ROI_PASSES, other,
                 f"masks and boxes take the {other} pass on CUDA (EGAL_CUDA_ROI_PASS)") for other in ROI_PASSES[1:]),
          *(Pass("map_pass", "EGAL_CUDA_MAP_PASS", MAP_PASSES, other,
                 f"maps take the {other} pass on CUDA (EGAL_CUDA_MAP_PASS)") for other in MAP_PASSES[1:])]


@pytest.fixture(params=PASSES, ids=[p.other for p in PASSES])
def cuda_pass(request):
    chosen = request.param
    previous = chosen.get()
    yield chosen
    chosen.set(previous)


def test_the_default_and_the_backends_report_the_pass(cuda_pass):
    if not os.environ.get(cuda_pass.variable):
        assert cuda_pass.get() == cuda_pass.default
    cuda_pass.set(cuda_pass.other)
    assert cuda_pass.get() == egal.backends()["cuda"][cuda_pass.key] == cuda_pass.other
    cuda_pass.set(cuda_pass.default)
    assert egal.backends()["cuda"][cuda_pass.key] == cuda_pass.default


def test_an_unknown_pass_is_refused_and_changes_nothing(cuda_pass):
    cuda_pass.set(cuda_pass.other)
    with pytest.raises(ValueError, match='not "fast"') as refused:
        cuda_pass.set("fast")
    assert all(f'"{name}"' in str(refused.value) for name in cuda_pass.names)
    assert cuda_pass.get() == cuda_pass.other


def _import_with(variable, value):
    env = {**os.environ, variable: value}
    code = "import egal, json; print(json.dumps(egal.backends()['cuda']))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_the_variable_sets_the_pass_in_every_process_that_imports_egal(cuda_pass):
    done = _import_with(cuda_pass.variable, cuda_pass.other)
    assert done.returncode == 0, done.stderr
    assert f'"{cuda_pass.key}": "{cuda_pass.other}"' in done.stdout


def test_a_bad_variable_is_a_warning_that_names_it_and_the_default_stays(cuda_pass):
    done = _import_with(cuda_pass.variable, "fast")
    assert done.returncode == 0, done.stderr
    assert f'"{cuda_pass.key}": "{cuda_pass.default}"' in done.stdout
    assert f'{cuda_pass.variable} ignored: the CUDA' in done.stderr
    assert all(f'"{name}"' in done.stderr for name in cuda_pass.names) and 'not "fast"' in done.stderr


def test_egal_backends_says_when_a_cuda_pass_is_not_the_default(cuda_pass):
    env = {**os.environ, cuda_pass.variable: cuda_pass.other}
    done = subprocess.run([sys.executable, "-m", "egal.cli", "backends"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert (cuda_pass.said in done.stdout) == egal.backends()["cuda"]["compiled"]
    env.pop(cuda_pass.variable)
    done = subprocess.run([sys.executable, "-m", "egal.cli", "backends"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert cuda_pass.variable not in done.stdout
