"""Argument checks, in one place for the whole package (the scorer's arrays: egal._score_inputs).

Scalars (alpha and other fractions, counts, sizes, choices): `check_alpha`,
`check_fraction`, `check_int`, `check_hw`, `check_choice`, `check_bool`, `check_k`,
and the predicate `is_positive_int`. Each takes the argument's name and raises an
EgalError (EgalTypeError for a wrong type) whose message starts with that name; the exception also
keeps it in `.argument` (and the rest in `.problem`), so that `renamed` can give
the same error naming a command-line option instead: the library names its
arguments, the CLI its flags.
"""
from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence

from .errors import EgalError, EgalTypeError


def bad_argument(kind, argument: str, problem: str) -> Exception:
    """kind(f"{argument} {problem}") (EgalError or EgalTypeError) that also keeps `argument` and `problem`
    apart, so that a command line can name its own option instead (see `renamed`)."""
    exc = kind(f"{argument} {problem}")
    exc.argument, exc.problem = argument, problem
    return exc


def renamed(exc: Exception, name_of) -> Exception | None:
    """The same error naming the argument name_of(argument) (e.g. a command-line flag); None when `exc`
    does not come from these checks or name_of gives None."""
    argument = getattr(exc, "argument", None)
    name = name_of(argument) if argument is not None else None
    if name is None:
        return None
    # Named for a command line, it is a user's error there (exit 2, no traceback) whatever the library raised.
    kind = type(exc) if isinstance(exc, EgalError) else EgalTypeError if isinstance(exc, TypeError) else EgalError
    # "'value' (--flag) is ...", written for a caller that does not rename: the flag is named once.
    problem = re.sub(rf"^('[^']*') \({re.escape(name)}\)", r"\1", exc.problem)
    return bad_argument(kind, name, problem)


def is_real(value) -> bool:
    """A real number (not a bool, not NaN)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value


def is_finite_real(value) -> bool:
    """A real number (not a bool) that is finite as a float: not NaN or infinite, nor an integer beyond float's
    range (a config file's 10**400 would raise OverflowError in math.isfinite)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def show_number(value) -> str:
    """A value for a message: its repr, but an integer beyond float's range by its length (10**400 in a config)."""
    if isinstance(value, int) and not isinstance(value, bool) and not is_finite_real(value):
        return f"an integer of {len(str(abs(value)))} digits"
    return repr(value)


def is_int(value) -> bool:
    """An integer, and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_positive_int(value) -> bool:
    return is_int(value) and value > 0


def check_int(value, name: str, *, minimum: int = 1) -> int:
    """An integer >= minimum (not a bool); an EgalError otherwise, for a non-integer too."""
    if not is_int(value) or value < minimum:
        want = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise bad_argument(EgalError, name, f"must be {want}, got {value!r}")
    return int(value)


def check_fraction(value, name: str) -> float:
    """A real number in [0, 1] (not a bool, not NaN)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise bad_argument(EgalTypeError, name, f"must be a real number in [0, 1], got {type(value).__name__}")
    if not (0 <= value <= 1):  # also rejects NaN; compared before float(), which an integer like 10**400 overflows
        raise bad_argument(EgalError, name, f"must lie in [0, 1], got {show_number(value)}")
    return float(value)


def check_alpha(alpha, name: str = "alpha") -> float:
    """The entropy weight of docs/scoring.md's score: a real number in [0, 1]."""
    return check_fraction(alpha, name)


def check_hw(value, name: str) -> tuple[int, int]:
    """(H, W): two positive integers (a tuple, list or other sequence of two)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise bad_argument(EgalError, name, f"must be (H, W), got {value!r}")
    if not all(is_positive_int(v) for v in value):
        raise bad_argument(EgalError, name, f"must be two positive integers (H, W), got {value!r}")
    return int(value[0]), int(value[1])


def check_choice(value, name: str, choices: Sequence):
    if value not in choices:
        raise bad_argument(EgalError, name, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


# Where a model runs. cuda:N is the GPU of index N among those CUDA_VISIBLE_DEVICES leaves visible; cuda is GPU 0
# (egal sets no other current device). Training may also run on mps (Apple's GPU); the fused scorer has no backend
# there, so scoring may not.
DEVICE_FORMS = "cpu, cuda or cuda:N"


def check_device(value, name: str = "device", *, mps: bool = False) -> str:
    """A device a model runs on: "cpu", "cuda" or "cuda:N" (N a GPU's index), and "mps" with mps=True; returned as
    given."""
    pattern, forms = (r"cpu|cuda(:[0-9]+)?|mps", "cpu, cuda, cuda:N or mps") if mps else (r"cpu|cuda(:[0-9]+)?",
                                                                                         DEVICE_FORMS)
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise bad_argument(EgalError, name, f"must be {forms}, got {value!r}")
    return value


def cuda_index(device: str) -> int | None:
    """The GPU index a checked device names: None for "cpu", 0 for "cuda", N for "cuda:N"."""
    if device == "cpu":
        return None
    return int(device.partition(":")[2] or 0)


def check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise bad_argument(EgalTypeError, name, f"must be True or False, got {value!r}")
    return value


MAX_THREADS = 1024  # torch threads per process: beyond any CPU, far below what torch.set_num_threads overflows at


def check_threads(value, name: str = "threads") -> int:
    """A torch thread count: an integer from 1 to MAX_THREADS."""
    if not is_int(value) or not 1 <= value <= MAX_THREADS:
        raise bad_argument(EgalError, name, f"must be an integer from 1 to {MAX_THREADS}, got {show_number(value)}")
    return int(value)


def exactly_one(names_values, what: str) -> str:
    given = [n for n, v in names_values if v is not None]
    names = " / ".join(n for n, _ in names_values)
    if len(given) != 1:
        state = "none" if not given else "both " + " and ".join(given) if len(given) == 2 else ", ".join(given)
        raise EgalError(f"give exactly one of {names} ({what}); got {state}")
    return given[0]


def check_k(k) -> int:
    """select_top_k's k: a non-negative int (a float or a bool is a type error)."""
    if not is_int(k):
        raise bad_argument(EgalTypeError, "k", f"must be a non-negative int, got {type(k).__name__}")
    return check_int(k, "k", minimum=0)
