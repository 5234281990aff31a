"""The `egal` command line.

Exit status:
  0    done.
  1    the work failed (egal.errors.RunFailed: a worker killed, out of memory; the message says why
       and what is kept), or the disk it writes to is full, read-only or over quota (one line; no
       file is left half written), or a defect in egal: any other exception, shown with its traceback.
  2    a user error, printed as one line without a traceback: an egal.errors.EgalError (bad option,
       bad input, a bad config or model file), a bad command line (argparse's own message), a
       missing optional dependency (the message names the extra to install), or an OSError about a
       path (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
       PermissionError): every path a command opens is one the user named (--pool, --model, --out,
       --config) or one inside it.
  130  interrupted by Ctrl-C; 143 stopped by SIGTERM (both stop cleanly: `egal score` keeps every
       finished batch for --resume).
A plain ValueError or TypeError is not a user error here: library code raises EgalError for
those, so one that escapes is a defect and keeps its traceback.
"""
import argparse
import signal
import sys
import threading

from ._disk import caused_by_disk, is_disk_error
from .errors import EgalError, RunFailed

# The distribution name on PyPI (the import name and the command stay `egal`).
DISTRIBUTION = "egal-al"

# Optional dependencies and the extra that installs each (pyproject.toml).
EXTRA_OF_MODULE = {
    "torch": "torch", "torchvision": "torch",
    "sklearn": "experiments", "scipy": "experiments", "matplotlib": "experiments", "yaml": "experiments",
    "onnx": "export", "onnxscript": "export",
    "onnxruntime": "onnx-cpu",
    "ray": "ray",
    "nibabel": "import",
}
# OSErrors about a path: the user's to fix (see the module docstring).
PATH_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
# Commands that cannot start without PyTorch.
NEEDS_TORCH = {"train": "trains a model", "simulate": "trains a model in every round"}


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the same orderly stop as Ctrl-C."""


def install_hint(extra: str) -> str:
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="egal",
        description="Explainability-guided active learning for medical imaging: rank unlabeled images by "
        "uncertainty (softmax entropy) and by how far the model's Grad-CAM attention is from the expert "
        "region of interest (soft Dice distance), then pick the ones to annotate next.",
        epilog=f"Run 'egal COMMAND --help' for the options of one command. Installed from PyPI as {DISTRIBUTION}.",
    )
    # The commands are imported here, not with this module: a Ctrl-C while they load (some load pyarrow) is then
    # inside main's handling of it.
    from . import __version__
    from .commands import backends, demo, export, pool, report, score, select, simulate, train

    parser.add_argument("--version", action="version", version=f"egal {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (score, select, report, train, simulate, demo, export, backends, pool):
        command.register(subparsers)
    return parser


def main(argv=None) -> int:
    # Everything main does is inside this try, so that a Ctrl-C (or a SIGTERM, whose handler comes first) is one
    # line and status 130 (143) wherever it arrives: while the commands load, while the options are parsed, during
    # the run or while it cleans up.
    args = restore_signals = None
    stops = []  # the stops (Ctrl-C, SIGTERM) raised during this call
    try:
        restore_signals = _on_stop_signals(stops)
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        restore = _escape_undecodable_output()
        try:
            return _run(args)
        finally:
            restore()
    except KeyboardInterrupt as exc:
        return stopped(exc, args)
    except Exception:
        if stops:  # the stop was raised inside code that turned it into another error (numpy's C import does)
            return stopped(stops[0], args)
        raise
    finally:
        if restore_signals is not None:
            restore_signals()


def stopped(exc: KeyboardInterrupt, args=None) -> int:
    """Says that Ctrl-C (or SIGTERM: Terminated) stopped `egal` (args: the parsed command line, None before it
    was parsed), as one line, and returns the exit status: 130, or 143 for SIGTERM."""
    command = getattr(args, "command", None)
    how = "stopped by SIGTERM" if isinstance(exc, Terminated) else "interrupted"
    print(f"{command_name(args)}: {how}" + (
        "; what was scored is kept: rerun with --resume to finish" if command == "score" else ""), file=sys.stderr)
    return 143 if isinstance(exc, Terminated) else 130


def command_name(args) -> str:
    """How messages name the command: `egal pool add-labels`, or `egal` before the command line is parsed."""
    if getattr(args, "command", None) is None:
        return "egal"
    return " ".join(["egal", args.command, *([args.pool_command] if getattr(args, "pool_command", None) else [])])


def _escape_undecodable_output():
    """Print a file name of another encoding than UTF-8 with backslash escapes instead of failing (a UTF-8
    locale's stdout refuses its lone surrogates after the work is done); returns what undoes it."""
    changed = []
    for stream in (sys.stdout, sys.stderr):
        errors = getattr(stream, "errors", None)
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):  # not a text stream of io's (captured, redirected)
            continue
        changed.append((stream, errors))

    def restore():
        for stream, errors in changed:
            try:
                stream.reconfigure(errors=errors)
            except (AttributeError, ValueError, OSError):
                pass

    return restore


def _run(args) -> int:
    name = command_name(args)
    try:
        if args.command in NEEDS_TORCH:
            _require_torch(args.command)
        return int(args.func(args) or 0)
    except (EgalError, *PATH_ERRORS) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1 if caused_by_disk(exc) else 2  # (a model trained but not saved on a full disk: ModelNotSaved)
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF_MODULE.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"{name}: error: this needs the Python package {exc.name!r}, which is not installed here: "
              f"{install_hint(extra)}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except UnicodeEncodeError as exc:
        if "surrogates not allowed" not in str(exc) or not isinstance(exc.object, str) or "\n" in exc.object:
            raise  # not a file name
        # Linux hands Python a file name of another encoding as lone surrogates; pyarrow cannot open such a path.
        shown = exc.object.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        print(f"{name}: error: the path '{shown}' is not UTF-8 text (a file name in another encoding), which "
              "Parquet's reader cannot open: rename it", file=sys.stderr)
        return 2
    except OSError as exc:
        if not is_disk_error(exc):
            raise
        kept = "; the batches scored so far are kept: make room and rerun with --resume" if args.command == "score" \
            else ""
        print(f"{name}: error: {exc}{kept}", file=sys.stderr)
        return 1


def _require_torch(command: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise EgalError(f"egal {command} {NEEDS_TORCH[command]} and needs PyTorch, which is not installed here: "
                         f"{install_hint('torch')} (on a machine without a GPU, install PyTorch's CPU wheels first, "
                         "see the README)") from None


def _on_stop_signals(stops: list):
    """SIGTERM raises Terminated in the main thread, so a scheduler's stop ends the run like Ctrl-C: workers shut
    down, finished work kept, the same message. Ctrl-C raises KeyboardInterrupt as Python's own handler does, where
    that handler is in place (not where SIGINT is ignored, as in a background job). Each raised stop is appended to
    `stops`: code that catches it and raises another error (a C extension's import) cannot hide it. Returns what
    puts the previous handlers back (nothing to do outside the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        stops.append(Terminated())
        raise stops[-1]

    def interrupt(signum, frame):
        stops.append(KeyboardInterrupt())
        raise stops[-1]

    previous = {}
    try:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, stop)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
    except ValueError:  # not the main interpreter: Python's own handling stays
        pass

    def restore():
        for signum, handler in previous.items():
            if handler is not None:  # (None: a handler not set from Python, which Python cannot set back)
                signal.signal(signum, handler)

    return restore


if __name__ == "__main__":
    sys.exit(main())
