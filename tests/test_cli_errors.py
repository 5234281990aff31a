"""How the CLI reports what goes wrong: a user error is one line and exit status 2; a failed run is one
line and status 1; a defect (any other exception) keeps its traceback, status 1."""
import os
import subprocess
import sys

import pytest

import egal
from egal.cli import main
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


def test_a_path_that_is_not_utf8_is_one_line_not_a_traceback(tmp_path, capsys):
    import shutil

    from pools import make_rows, save_tiny_model, write_pool

    pytest.importorskip("torch")
    pool = write_pool(tmp_path / "pool.parquet", make_rows(4, folder=tmp_path))
    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/p\xe9.parquet")  # Latin-1 bytes: lone surrogates in Python
    shutil.copy(pool, odd)
    model = save_tiny_model(tmp_path / "model.pt")
    assert main(["score", "--pool", odd, "--model", str(model), "--out", str(tmp_path / "s.parquet"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "p\\udce9.parquet' is not UTF-8 text" in err and len(err.strip().splitlines()) == 1


def test_output_piped_into_a_reader_that_stops_early_ends_quietly_with_status_0():
    # A command whose reader closes the pipe (egal ... | head -1): the write raises BrokenPipeError, which the
    # handler for full disks (an OSError too) caught first and re-raised as a traceback.
    setup = ("import egal.commands.backends as command\n"
             "def run(args):\n    raise BrokenPipeError(32, 'Broken pipe')\n"
             "command.run = run\n")
    code = setup + "import sys\nfrom egal.cli import main\nsys.exit(main(['backends']))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr
    full = setup.replace("BrokenPipeError(32, 'Broken pipe')", "OSError(28, 'No space left on device')")
    done = subprocess.run([sys.executable, "-c", full + code[len(setup):]], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and done.stderr == "egal backends: error: [Errno 28] No space left on device\n"


def test_file_names_of_another_encoding_are_refused_before_any_work_or_printed_escaped(tmp_path):
    from pools import make_rows, save_tiny_model, write_pool

    pytest.importorskip("torch")
    pool = write_pool(tmp_path / "pool.parquet", make_rows(4, folder=tmp_path))
    model = save_tiny_model(tmp_path / "model.pt")
    odd = os.fsencode(str(tmp_path)) + b"/nu\xff"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # a UTF-8 locale's strict stdout (C.UTF-8 escapes)
    run = lambda *argv: subprocess.run([sys.executable, "-m", "egal.cli", "score", "--pool", str(pool),  # noqa: E731
                                        "--model", str(model), "--workers", "0", *argv], capture_output=True,
                                       env=env, timeout=300)
    # The Parquet writer cannot name a file so: refused before anything is written (a parts folder was left).
    done = run("--out", odd + b".parquet")
    assert done.returncode == 2 and b"is not UTF-8 text" in done.stderr
    assert not any(name.startswith(b"nu") for name in os.listdir(os.fsencode(str(tmp_path))))
    # A selection CSV so named is written by Python, and its name printed escaped (a UnicodeEncodeError on
    # print, after the work, was called an unreadable path).
    done = run("--out", str(tmp_path / "s.parquet"), "--select", "2", "--select-out", odd + b".csv")
    assert done.returncode == 0, done.stderr
    assert b"nu\\udcff.csv" in done.stdout and os.path.exists(odd + b".csv")
