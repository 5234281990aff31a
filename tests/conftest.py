import os

import numpy as np
import pytest

import egal

# Backends compared with the float64 implementation of docs/scoring.md. The CUDA
# backend has its own module (test_scorer_cuda.py) that skips without a GPU.
CPU_BACKENDS = ["cpu", "reference"]


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def cuda_available() -> bool:
    return bool(egal.backends()["cuda"]["available"])


@pytest.fixture
def unwritable(monkeypatch, tmp_path):
    """tmp_path/ro, a folder that egal may not write in (a read-only mount: os.access says so, even to root, whom
    chmod does not stop)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if mode == os.W_OK and os.path.realpath(path) ==
                        os.path.realpath(folder) else real_access(path, mode))
    return folder
