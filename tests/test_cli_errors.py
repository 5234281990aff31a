"""How the CLI reports what goes wrong: a user error is one line and exit status 2; a failed run is one
line and status 1; a defect (any other exception) keeps its traceback, status 1."""
import subprocess
import sys

import pytest

import egal
from egal.errors import EgalError, EgalTypeError, RunFailed


def egal_cli(*argv, raising=None):
    """Run `egal ARGV` in a child process; with `raising` (source of an exception), `egal backends` raises it."""
    setup = ""
    if raising is not None:
        setup = ("import egal.commands.backends as command\n"
                 "from egal.errors import EgalError, EgalTypeError, RunFailed\n"
                 f"def run(args):\n    raise {raising}\n"
                 "command.run = run\n")
    code = setup + f"import sys\nfrom egal.cli import main\nsys.exit(main({list(argv)!r}))\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_a_bad_option_is_one_line_and_status_2():
    done = egal_cli("score", "--pool", "pool.parquet", "--model", "model.pt", "--alpha", "2")
    assert done.returncode == 2
    assert done.stderr == "egal score: error: --alpha must lie in [0, 1], got 2.0\n"


def test_a_missing_pool_is_one_line_and_status_2(tmp_path):
    done = egal_cli("score", "--pool", str(tmp_path / "missing.parquet"), "--model", "model.pt")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert "missing.parquet" in done.stderr


@pytest.mark.parametrize("raising, message", [
    ("EgalError('the pool has no id column')", "the pool has no id column"),
    ("EgalTypeError('alpha must be a real number in [0, 1], got str')",
     "alpha must be a real number in [0, 1], got str"),
    ("FileNotFoundError(2, 'No such file or directory', 'pool.parquet')",
     "[Errno 2] No such file or directory: 'pool.parquet'"),
])
def test_user_errors_exit_2_without_a_traceback(raising, message):
    done = egal_cli("backends", raising=raising)
    assert done.returncode == 2
    assert done.stderr == f"egal backends: error: {message}\n"


def test_a_failed_run_exits_1_without_a_traceback():
    done = egal_cli("backends", raising="RunFailed('a decoder worker process died; finished batches are kept')")
    assert done.returncode == 1
    assert done.stderr == "egal backends: error: a decoder worker process died; finished batches are kept\n"


@pytest.mark.parametrize("raising", ["ValueError('a defect')", "TypeError('a defect')", "KeyError('a defect')",
                                     "RuntimeError('a defect')"])
def test_any_other_exception_is_a_defect_with_its_traceback_and_status_1(raising):
    done = egal_cli("backends", raising=raising)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert f"{raising.split('(')[0]}: " in done.stderr.splitlines()[-1] and "a defect" in done.stderr


def test_a_bad_command_line_is_argparse_s_message_and_status_2():
    done = egal_cli("score", "--pool", "pool.parquet", "--no-such-option")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "unrecognized arguments: --no-such-option" in done.stderr


def test_the_user_error_classes_keep_their_builtin_bases():
    # Callers who caught ValueError / TypeError before keep working.
    assert issubclass(EgalError, ValueError)
    assert issubclass(EgalTypeError, EgalError) and issubclass(EgalTypeError, TypeError)
    assert issubclass(RunFailed, RuntimeError) and not issubclass(RunFailed, EgalError)
    assert egal.EgalError is EgalError  # what a notebook catches


@pytest.mark.parametrize("backend", ["cpu", "cuda", "reference"])
def test_backends_require_exits_by_whether_the_backend_runs_here(backend):
    info = egal.backends()[backend]
    done = egal_cli("backends", "--require", backend)
    if info["available"]:
        assert done.returncode == 0 and done.stdout == f"{backend}: runs here\n"
    else:
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr == f"{backend}: cannot run here: {info.get('reason') or 'not built'}\n"


def test_backends_require_names_the_backends_it_knows():
    done = egal_cli("backends", "--require", "gpu")
    assert done.returncode == 2 and "invalid choice: 'gpu' (choose from 'cpu', 'cuda', 'reference')" in done.stderr
