"""How a command names the library's arguments in its errors: by the flag a user typed (--batch-size), not by the
Python keyword (batch_size) that the library's message names; and the flags every command shares (--quiet)."""
from __future__ import annotations

import contextlib
import copy
import re
import sys
import warnings
from collections.abc import Callable, Iterable

from .._checks import renamed
from ..errors import EgalError, RunFailed


def flag_of(argument: str) -> str:
    return "--" + argument.replace("_", "-")


def flags_for(arguments: Iterable[str]) -> Callable[[str], str | None]:
    """The name_of of errors_named_as_flags for a command whose options are `arguments`: the flag of each of them,
    None (the message as it is) for any other argument."""
    known = frozenset(arguments)
    return lambda argument: flag_of(argument) if argument in known else None


@contextlib.contextmanager
def errors_named_as_flags(name_of: Callable[[str], str | None]):
    """Inside the block, a ValueError or TypeError about an argument that name_of names is raised again naming that
    instead (egal._checks.renamed): a user's error, exit status 2, one line. An egal error whose message names an
    option the library's way as well names only the flag (flags_only). Any other error goes on as it is."""
    try:
        yield
    except (ValueError, TypeError, RunFailed) as exc:
        named = renamed(exc, name_of) if isinstance(exc, (ValueError, TypeError)) else None
        if named is None:
            if not isinstance(exc, (EgalError, RunFailed)):
                raise
            named = exc
        message = flags_only(str(named), name_of)
        if message != str(named):
            named = copy.copy(named)  # the same kind of error, so that egal.cli gives it the same exit status
            named.args = (message,)
            if getattr(named, "problem", None) is not None:
                named.problem = flags_only(named.problem, name_of)
        if named is exc:
            raise
        raise named from exc.__cause__  # what caused it still shows (a full disk: egal.cli's exit status 1)


# The library's messages name an option as a Python caller writes it and, in brackets, as a command line does:
# "pass overwrite=True (--overwrite)", "add select=K (--select K)", "needed with per_group (--per-group)",
# "out 'scores.parquet' (--out) already exists", "or choose another out". A command names the flag alone: "pass
# --overwrite", "add --select K", "with --per-group", "--out 'scores.parquet' already exists", "another --out".
# Each is rewritten only where the flag in brackets is that argument's (overwrite -> --overwrite), so that a
# bracket that says something else ("embeddings file (--embeddings)") stays as it is.
_ASSIGNED = re.compile(r"(?<![\w.])([a-z][a-z_]*)=(True|False|None|'[^'\n]*'|[A-Z]+|[0-9][0-9.]*) "
                       r"\((--[a-z][a-z-]*)((?: [^()\n]*)?)\)")
_NAMED = re.compile(r"(?<![\w.])([a-z][a-z_]*)((?: '[^'\n]*'| [0-9][0-9.]*)?) \((--[a-z][a-z-]*)\)")
_ANOTHER_OUT = re.compile(r"\banother out\b")


def flags_only(message: str, name_of: Callable[[str], str | None] = flag_of) -> str:
    """`message` naming each option by its command-line flag alone (see above). name_of gives the command's flag
    of an argument (egal score --report names the page's out --report), None for one it does not have, whose
    words stay as they are."""
    def flag(argument: str, bracket: str) -> str | None:
        return name_of(argument) if bracket == flag_of(argument) else None

    def assigned(m) -> str:  # the value goes with the flag unless the brackets give it: "--select K"
        value = m[4] or ("" if m[2] == "True" else " " + m[2])
        return flag(m[1], m[3]) + value if flag(m[1], m[3]) else m[0]

    message = _ASSIGNED.sub(assigned, message)
    message = _NAMED.sub(lambda m: flag(m[1], m[3]) + m[2] if flag(m[1], m[3]) else m[0], message)
    out = name_of("out")
    return _ANOTHER_OUT.sub(f"another {out}", message) if out else message


QUIET_FLAG = "--quiet"


def add_quiet(parser, help_text: str = "print nothing but errors", *, default: bool = False) -> None:
    """--quiet, as the commands have it: off by default; on, a command prints no progress and, where its help says
    so, nothing but errors. Errors go to stderr either way (egal.cli prints them), so a script still sees why it
    failed."""
    parser.add_argument(QUIET_FLAG, action="store_true", default=default, help=help_text)


def add_device(parser, default: str) -> None:
    """--device, as the commands that run a model have it; the library checks the value (egal._checks.check_device),
    so that a notebook and a command line refuse the same devices with the same words."""
    parser.add_argument("--device", default=default, metavar="DEVICE",
                        help="where the model runs: cpu, cuda, or cuda:N for the GPU of index N among those "
                        "CUDA_VISIBLE_DEVICES leaves visible (default: %(default)s)")


@contextlib.contextmanager
def egal_warnings_as_lines(command: str, always: tuple = ()):
    """Inside the block, egal's own warnings (a category from an egal module: rows that cannot be decoded, labels the
    model does not know, a runtime that fell back) print as one line on stderr, `egal COMMAND: warning: ...`, as the
    command's errors do, --quiet or not: each changes what the run's result means. Other warnings as Python shows
    them. always: categories said on every run, not once per process."""
    with warnings.catch_warnings():  # restores showwarning and the filters afterwards
        for category in always:
            warnings.simplefilter("always", category)
        show_python_warning = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if category.__module__.split(".")[0] == "egal":
                print(f"egal {command}: warning: {message}", file=sys.stderr, flush=True)
            else:
                show_python_warning(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield
