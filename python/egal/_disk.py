"""A disk that cannot take what egal writes (full, over quota, read-only, over the file-size limit): the machine's
state, not a defect nor the user's input. The CLI says it in one line (exit status 1); a writer that knows which
output it was writing says that too (OutputNotWritten), and what it kept."""
from __future__ import annotations

import errno
import os

# What each errno of a full or read-only disk means to the user, and what to do about it.
DISK_ERRNOS = {
    errno.ENOSPC: ("the disk is full", "make room on the disk and run again"),
    errno.EDQUOT: ("the disk quota is used up", "make room within the quota and run again"),
    errno.EROFS: ("the file system is read-only", "write it to another disk"),
    errno.EFBIG: ("the file grew past the largest size this system allows, a file-size limit such as ulimit -f",
                  "raise the limit, or write it to another disk"),
}


def is_disk_error(exc: BaseException | None) -> bool:
    """An OSError of a disk that cannot take what is written (DISK_ERRNOS)."""
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


def caused_by_disk(exc: BaseException) -> bool:
    """Whether a full or read-only disk is what made `exc` (itself, or the error it was raised from)."""
    return is_disk_error(exc) or is_disk_error(exc.__cause__)


def reason(exc: OSError) -> str:
    """What the disk error means, with the system's words: 'the disk is full (No space left on device)'."""
    return f"{meaning(exc)} ({os.strerror(exc.errno)})"


def meaning(exc: OSError) -> str:
    """What the disk error means to the user: 'the disk is full'."""
    return DISK_ERRNOS[exc.errno][0]


def advice(exc: OSError) -> str:
    """What to do about the disk error: 'make room on the disk and run again'."""
    return DISK_ERRNOS[exc.errno][1]


class OutputNotWritten(OSError):
    """A disk error while writing an output, naming that output (`what` `path`: "--out 'pool.parquet'"), what was
    kept (`kept`: "nothing was written there") and what to do. Keeps the errno: the CLI treats it as the disk
    error it is."""

    def __init__(self, exc: OSError, what: str, path, kept: str):
        super().__init__(exc.errno, exc.strerror)
        self.filename = os.fspath(path)
        self.message = f"{what} {self.filename!r} could not be written: {reason(exc)}; {kept}; {advice(exc)}"

    def __str__(self) -> str:
        return self.message


def name_output(exc: BaseException | None, what: str, path, kept: str) -> OutputNotWritten | None:
    """The OutputNotWritten to raise instead of `exc` when `exc` is a disk error not yet named (None otherwise)."""
    if is_disk_error(exc) and not isinstance(exc, OutputNotWritten):
        return OutputNotWritten(exc, what, path, kept)
    return None
