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
