"""How egal's writers put an output in place, written once for all of them:

  * the bytes go to a temporary sibling (temporary_path) and reach the destination whole, by one rename
    (replaced_atomically, publish);
  * a new output never replaces anything: what appeared at the destination while the run wrote (another run,
    another program) is kept and the run refused (publish, rename_no_replace);
  * a writer holds the destination's lock (OutputLock) from its checks to its rename, so that a second egal writing
    the same output is refused at once instead of racing the first;
  * what a killed run left beside the destination (a SIGKILL runs no `finally`) is removed by the next writer of
    that destination (remove_stale_temporaries), but for a copy that may be the only one left of something
    (a destination's previous content set aside while its replacement went in: set_aside_path).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import re
import shutil
import stat
import sys
import uuid

from ._disk import is_disk_error
from .errors import EgalError

try:
    import fcntl
except ImportError:  # a platform without it (Windows): outputs are written unlocked, publish's rules still hold
    fcntl = None

OVERWRITE = "overwrite=True (--overwrite)"


class DestinationError(EgalError):
    """The destination cannot be written now: another egal holds it, or it appeared while this run wrote."""


def temporary_path(path, suffix: str = "", *, hidden: bool = False) -> str:
    """A sibling of `path` that no other writer uses: the process id and a random part, so that two
    writers of one file (processes, or threads of one process) never rename each other's bytes away.
    suffix: for writers that insist on an extension (numpy's savez appends ".npz" otherwise).
    hidden: a dot name (".NAME.tmp-..."), for writers whose folder a user browses while they run
            (an importer's pool beside the user's own files)."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    if hidden:
        name = f".{name}"
    return os.path.join(folder, f"{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


# What follows NAME in a temporary_path of NAME: the process id, the random part, a suffix.
_TEMPORARY = r"\.tmp-(\d+)-[0-9a-f]{8}(\.[A-Za-z0-9]+)?"
# The suffix of set_aside_path: a destination's previous content, renamed aside while its replacement goes in.
SET_ASIDE = ".old"


def set_aside_path(path) -> str:
    """Where a destination's previous content waits while its replacement goes in (a hidden temporary_path ending in
    SET_ASIDE), to be deleted once the replacement is in place, or renamed back if it fails."""
    return temporary_path(path, SET_ASIDE, hidden=True)


def replace_folder(new, path) -> str | None:
    """Puts the complete folder `new` at `path` in place of the folder there, with its permissions, and returns where
    that one is now, for the caller to delete once nothing needs it (None if it vanished meanwhile).

    In one step where the system allows it (Linux renameat2 RENAME_EXCHANGE: the old folder takes `new`'s name).
    Elsewhere the old folder is set aside (set_aside_path), then `new` renamed in: killed in between, `path` is
    missing and the old folder waits whole under its set-aside name, which remove_stale_temporaries lets the
    caller keep while `path` is missing."""
    keep_mode_of(path, new)
    if os.path.isdir(path) and _renameat2(new, path, RENAME_EXCHANGE):
        return os.fspath(new)
    aside = set_aside(path)
    try:
        rename_no_replace(new, path)
    except BaseException:
        if aside is not None:
            os.rename(aside, path)
        raise
    return aside


def set_aside(path) -> str | None:
    """Renames `path`, if it exists, to a set_aside_path, and returns that (None when there was nothing)."""
    if not os.path.lexists(path):
        return None
    aside = set_aside_path(path)
    os.rename(path, aside)
    return aside


def is_set_aside(path) -> bool:
    return os.fspath(path).endswith(SET_ASIDE)


def stale_temporaries(path) -> list[str]:
    """The temporaries of `path` that killed runs left: the names temporary_path made for `path` (hidden or not, any
    suffix) whose process is not running on this machine.

    The limit: a writer on another host sharing the folder (a network file system), or in another process namespace
    (a container), is not seen. Its process id means nothing here, so its temporary copy looks stale, and the next
    writer of the same destination on this host removes it while it writes, unless the file system carries the
    destination's lock (OutputLock) between hosts, which refuses that next writer first. That writer then fails when
    it writes on or renames its copy (the copy is gone, or the pool's check finds its files missing), and its
    destination keeps what it had: the run is lost, never data."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    pattern = re.compile(r"\.?" + re.escape(name) + _TEMPORARY)
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    found = [(entry, match) for entry in entries if (match := pattern.fullmatch(entry))]
    return sorted(os.path.join(folder, entry) for entry, match in found if not _is_running(int(match.group(1))))


def remove_stale_temporaries(path, keep=lambda temporary: False) -> list[str]:
    """Removes stale_temporaries(path) (see there for the limit), silently as egal score removes its own, but those
    for which keep(temporary) is true (the only copy of something: the caller names them); returns those kept.
    A writer calls it at its start, holding the destination's lock."""
    kept = []
    for temporary in stale_temporaries(path):
        if keep(temporary):
            kept.append(temporary)
        else:
            remove_temporary(temporary)
    return kept


def remove_temporary(path) -> None:
    """Deletes a temporary file, link or folder of a writer, if it is there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def _is_running(pid: int) -> bool:
    """Whether a process of that id runs on this machine (this one included)."""
    if os.name == "nt":  # os.kill(pid, 0) would end the process there: not known, so taken as running
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    except (OverflowError, ValueError):  # no process has such an id
        return False
    return True


@contextlib.contextmanager
def replaced_atomically(path, suffix: str = "", *, hidden: bool = False):
    """Yields a temporary sibling of `path` (temporary_path) to write; when the block ends without an error it
    is renamed over `path`. Whatever fails (the writer, a disk that fills, a folder where the file should go), the
    temporary file is removed: a failed write leaves neither half a file nor a stray copy beside the user's."""
    tmp = temporary_path(path, suffix, hidden=hidden)
    try:
        yield tmp
        keep_mode_of(path, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        # A full disk is said of the file being written, not of its temporary name, which no longer exists.
        if is_disk_error(exc) and exc.filename is not None and os.fspath(exc.filename) == os.fspath(tmp):
            raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
        raise
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def keep_mode_of(path, replacement) -> None:
    """Gives `replacement` (a file or folder about to be renamed over `path`) the permissions of `path`, where it
    exists: a file its owner had made private (chmod 600, patient data) stays private when egal replaces it,
    instead of taking the umask's default."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return
    os.chmod(replacement, mode)


def publish(tmp, path, *, replace: bool, what: str, hint: str = OVERWRITE, keep_mode: bool = True) -> None:
    """Moves the complete temporary `tmp` (a file or a folder) to `path` in one step.

    replace: `path` existed when the run checked it and may be replaced (its permissions are kept, unless
    keep_mode is False: a file whose mode is a rule of its own, as a pseudonym key's 0600). Otherwise it
    is never replaced: if something appeared at `path` since (another run, another program), it is kept as it is
    and DestinationError says so, naming `path` as `what` and how to replace it (`hint`). `tmp` is left to the
    caller either way (to remove, or, when it is the only copy of something, to name)."""
    if replace:
        if keep_mode:
            keep_mode_of(path, tmp)
        os.replace(tmp, path)
        return
    try:
        rename_no_replace(tmp, path)
    except FileExistsError:
        raise DestinationError(f"{what} {os.fspath(path)!r} appeared while this run was writing it (another egal?): "
                               f"nothing written; choose another path, or run again with {hint} to replace "
                               "it") from None


def rename_no_replace(src, dst) -> None:
    """os.rename that never replaces anything at `dst` (a file, a link, a folder, empty or not): FileExistsError.

    One step where the system allows it (Linux renameat2 RENAME_NOREPLACE); else a file is hard-linked to `dst`
    (which fails if `dst` exists) and then unlinked from `src`. Where neither works (a file system without either),
    `dst` is checked and then renamed to: a window of microseconds instead of none."""
    if _renameat2(src, dst, RENAME_NOREPLACE):
        return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(dst))
    if not os.path.isdir(src):
        try:
            os.link(src, dst)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (FAT, some network shares): the check above, then the rename
            pass
        else:
            os.unlink(src)
            return
    try:
        os.rename(src, dst)
    except OSError as exc:  # onto a folder that appeared since and holds something, or onto a file
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(dst)) from exc
        raise


# renameat2's flags (linux/fs.h) and its "relative to the working directory" folder descriptor.
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100
# What renameat2 answers where the kernel, the C library or the file system lacks it: the caller falls back.
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


@functools.cache
def _libc_renameat2():
    """The C library's renameat2 (glibc 2.28+, Linux 3.15+), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _renameat2(src, dst, flags: int) -> bool:
    """renameat2(src, dst, flags): True when done, False where unsupported; OSError for any other failure."""
    function = _libc_renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), os.fspath(src), None, os.fspath(dst))


def lock_path(path) -> str:
    """The hidden sibling `.NAME.lock` whose lock stands for writing `path`."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(folder, f".{name}.lock")


class OutputLock:
    """An exclusive lock on writing `path`, held until release() or the process ends (the kernel drops it then,
    killed or not): a second egal writing the same output, process or thread, is refused (DestinationError) instead
    of racing the first. The lock is flock() on the hidden file lock_path(path), which release() removes.

    Advisory: a program that takes no lock (an older egal) is not stopped by it; publish's no-replace rule still
    keeps what it writes. On a file system (or a platform) without locks, the run goes on unlocked, as before.
    A SIGKILLed run leaves the empty lock file, unlocked: the next run on that output takes it, and removes it."""

    def __init__(self, path, what: str):
        self.path = lock_path(path)
        self._fd = self._acquire(os.fspath(path), what)

    def _acquire(self, path: str, what: str) -> int | None:
        if fcntl is None:
            return None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise DestinationError(f"{what} {path!r} is being written by another egal now (it holds "
                                       f"{self.path!r}): wait for it to end, or choose another path") from None
            except OSError:  # no locks on this file system
                os.close(fd)
                return None
            if self._is_ours(fd):
                return fd
            # The run that held it removed the lock file between our open and our lock: lock the one there now.
            os.close(fd)

    def _is_ours(self, fd: int) -> bool:
        try:
            return os.path.samestat(os.fstat(fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if getattr(self, "_fd", None) is None:  # (None too when __init__ refused)
            return
        if self._is_ours(self._fd):  # removed while locked: a run that opened it meanwhile sees it gone, retries
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        self.release()
