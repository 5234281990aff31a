"""Finding the processes a test started, by an environment tag, to assert that none outlives its test."""
from __future__ import annotations

import time

import pytest

TAG_VARIABLE = "EGAL_TEST_PROCESS_TAG"


def processes_tagged(tag) -> list:
    """Live (non-zombie) processes whose environment carries EGAL_TEST_PROCESS_TAG=tag."""
    psutil = pytest.importorskip("psutil")
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(TAG_VARIABLE) == tag and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def wait_until_gone(tag, timeout: float = 15.0) -> list:
    """The tagged processes still alive after up to `timeout` seconds (empty when all ended)."""
    deadline = time.time() + timeout
    while (left := processes_tagged(tag)) and time.time() < deadline:
        time.sleep(0.2)
    return left


def describe(process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:120]}"
    except Exception:
        return str(process.pid)
