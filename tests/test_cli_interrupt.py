"""Ctrl-C stops `egal` with one line and exit status 130 wherever it arrives: while the commands load, while the
command line is parsed, during the run and while it cleans up; never with a traceback. SIGTERM (a scheduler's stop)
does the same with status 143, from the moment egal's command line starts.

The child process sends itself SIGINT at a chosen point (the first import of a module, the first call of a
function), so that the test hits the same moment on every run instead of guessing it with a delay."""
import signal
import subprocess
import sys

import pytest

# Runs in the child: arms the interrupt at AT ("import:MODULE" or "call:QUALNAME"), then runs the command line as
# the `egal` command (its console script) or `python -m egal` does.
CHILD = r"""
import importlib.abc, os, runpy, signal, sys

entry, at, sent, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
kind, _, target = at.partition(":")


def interrupt():
    os.kill(os.getpid(), getattr(signal, sent))  # SIGINT as Ctrl-C sends it: Python's handler raises KeyboardInterrupt


class OnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, module=None):
        if name == target:
            sys.meta_path.remove(self)
            interrupt()
        return None


def on_call(frame, event, arg):
    if event == "call" and frame.f_code.co_qualname == target:
        sys.setprofile(None)
        interrupt()


if kind == "import":
    sys.meta_path.insert(0, OnImport())
else:
    sys.setprofile(on_call)
sys.argv = ["egal", *argv]
if entry == "script":
    from egal.cli import main
    sys.exit(main())
runpy.run_module("egal", run_name="__main__", alter_sys=True)
"""


def interrupted(entry: str, at: str, *argv: str, sent: str = "SIGINT") -> subprocess.CompletedProcess:
    # SIGINT at its default, as a terminal gives it: a runner in the background hands it down ignored.
    return subprocess.run([sys.executable, "-c", CHILD, entry, at, sent, *argv], capture_output=True, text=True,
                          timeout=300, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


TRAIN = ("train", "--pool", "no-such-pool.parquet", "--out", "never-written.pt")


@pytest.mark.parametrize(("at", "argv", "said"), [
    ("import:egal.commands", TRAIN, "egal: interrupted"),  # the commands loading (before: as egal.cli was imported)
    ("import:egal.commands.pool", TRAIN, "egal: interrupted"),
    ("call:ArgumentParser.parse_args", TRAIN, "egal: interrupted"),
    ("call:_escape_undecodable_output", TRAIN, "egal train: interrupted"),  # parsed, not yet running
    ("import:torch", TRAIN, "egal train: interrupted"),  # egal train's check that PyTorch is there
    ("import:egal.train.from_pool", TRAIN, "egal train: interrupted"),  # the run
    ("call:_escape_undecodable_output.<locals>.restore", ("backends",), "egal backends: interrupted"),  # its end
])
def test_ctrl_c_anywhere_in_the_command_line_is_one_line_and_status_130(at, argv, said):
    if at == "import:torch":
        pytest.importorskip("torch")
    done = interrupted("script", at, *argv)
    assert "Traceback" not in done.stderr, done.stderr
    assert (done.returncode, done.stderr) == (130, f"{said}\n")


def test_python_m_egal_is_the_command_line_and_stops_as_it_does():
    done = subprocess.run([sys.executable, "-m", "egal", "--version"], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, f"egal {__import__('egal').__version__}\n"), done.stderr
    done = interrupted("module", "import:egal.commands", *TRAIN)
    assert "Traceback" not in done.stderr, done.stderr
    assert (done.returncode, done.stderr) == (130, "egal: interrupted\n")


def test_ctrl_c_while_numpy_or_pyarrow_load_is_one_line_too():
    # `import egal` loads neither (egal/__init__.py imports its names on first use): they load inside egal.cli's
    # handler, where a Ctrl-C is one line.
    for module in ("numpy", "pyarrow"):
        done = interrupted("script", f"import:{module}", *TRAIN)
        assert "Traceback" not in done.stderr, done.stderr
        assert done.returncode == 130 and done.stderr.endswith("interrupted\n"), done.stderr


@pytest.mark.parametrize(("at", "argv", "said"), [
    ("import:egal.commands", TRAIN, "egal: stopped by SIGTERM"),  # the commands loading: the handler came first
    ("call:ArgumentParser.parse_args", TRAIN, "egal: stopped by SIGTERM"),
    ("call:_escape_undecodable_output", TRAIN, "egal train: stopped by SIGTERM"),
    ("import:egal.train.from_pool", TRAIN, "egal train: stopped by SIGTERM"),  # the run
])
def test_sigterm_anywhere_in_the_command_line_is_one_line_and_status_143(at, argv, said):
    if at.endswith("from_pool"):
        pytest.importorskip("torch")
    done = interrupted("script", at, *argv, sent="SIGTERM")
    assert "Traceback" not in done.stderr, done.stderr
    assert (done.returncode, done.stderr) == (143, f"{said}\n")


@pytest.mark.parametrize(("sent", "said", "status"), [("SIGINT", "egal: interrupted", 130),
                                                      ("SIGTERM", "egal: stopped by SIGTERM", 143)])
def test_a_stop_that_numpy_turns_into_an_import_error_is_still_the_stop(sent, said, status):
    # numpy's C module imports datetime as it loads (here while the commands load), and reports any failure there,
    # the stop included, as an ImportError that asks to check the install ("PyCapsule_Import could not import
    # module"): that error, raised because of the stop, is the stop.
    done = interrupted("script", "import:datetime", *TRAIN, sent=sent)
    assert "Traceback" not in done.stderr, done.stderr
    assert (done.returncode, done.stderr) == (status, f"{said}\n")
