"""Where an atomic write puts its bytes before `os.replace` moves them into place."""
from __future__ import annotations

import contextlib
import os
import stat
import uuid


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
