"""Bad input raises a clear ValueError/TypeError; never a crash. The calls run in
a child process: a segfault there fails these tests rather than killing pytest."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import bad_input_cases

ALL = {**bad_input_cases.CASES, **bad_input_cases.TORCH_CASES}


@pytest.fixture(scope="module")
def outcomes():
    here = Path(__file__).parent
    proc = subprocess.run([sys.executable, str(here / "bad_input_cases.py")], capture_output=True, text=True,
                          cwd=here, timeout=300)
    assert proc.returncode == 0, f"the bad-input child process died (rc={proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(ALL))
def test_bad_input_is_rejected_clearly(outcomes, name):
    _, expected_type, words = ALL[name]
    got_type, message = outcomes[name]
    expected = expected_type if isinstance(expected_type, tuple) else (expected_type,)
    assert got_type in {t.__name__ for t in expected}, f"{name}: raised {got_type}: {message}"
    for word in words:
        assert word in message, f"{name}: message {message!r} does not mention {word!r}"
