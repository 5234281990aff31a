"""The base classes of the errors egal reports to its users, as opposed to its defects.

  EgalError      the input, an option, a config file or the installation is wrong, and the message
                 says what to change: the CLI prints it and exits with status 2, without a traceback.
                 A ValueError, so that callers who caught ValueError before keep working.
  EgalTypeError  the same for a value of the wrong type (an option or config value that should be
                 a number, say): an EgalError that is also a TypeError.
  RunFailed      the work could not finish for a reason outside egal (a worker process killed, out
                 of memory); the message says what is kept: the CLI prints it and exits with status 1.

Anything else that escapes a command (a plain ValueError, TypeError, RuntimeError...) is a defect
and keeps its traceback (exit status 1). Python callers of the library API who pass an argument of
the wrong type get a plain TypeError: that is a programming error, not input the CLI can produce.
"""


class EgalError(ValueError):
    """A user error: bad input, a bad option, or a missing optional dependency."""


class EgalTypeError(EgalError, TypeError):
    """A user error about a value of the wrong type (from an option or a config file)."""


class RunFailed(RuntimeError):
    """The work failed for a reason outside egal; the message says why and what was kept."""
