"""How a command names the library's arguments in its errors: by the flag a user typed (--batch-size), not by the
Python keyword (batch_size) that the library's message names; and the flags every command shares (--quiet)."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from .._checks import renamed


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
    instead (egal._checks.renamed): a user's error, exit status 2, one line. Any other error goes on as it is."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        named = renamed(exc, name_of)
        if named is None:
            raise
        raise named from exc.__cause__  # what caused it still shows (a full disk: egal.cli's exit status 1)


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
