"""The base class of every error that is the user's to fix.

An `EgalError` means the input, an option or the installation is wrong and the message says
what to change: the CLI prints it and exits with status 2, without a traceback. Anything else
that escapes a command is a defect or a failure of the machine and keeps its traceback.
It derives from ValueError so that callers who caught ValueError before keep working.
"""


class EgalError(ValueError):
    """A user error: bad input, a bad option, or a missing optional dependency."""
