"""Running egal on a disk that cannot take what it writes, without filling a disk: the child process may write no
file larger than a limit (RLIMIT_FSIZE), so that a write past it fails with EFBIG as one to a full disk fails with
ENOSPC (SIGXFSZ, which would kill the process instead, is ignored)."""
import resource
import signal
import subprocess
import sys


def egal_limited(limit: int, *argv, cwd=None) -> subprocess.CompletedProcess:
    """`egal ARGV` in a child process whose files may not grow past `limit` bytes."""
    return python_limited(limit, "-m", "egal.cli", *map(str, argv), cwd=cwd)


def python_limited(limit: int, *arguments: str, cwd=None) -> subprocess.CompletedProcess:
    """`python ARGUMENTS` in a child process whose files may not grow past `limit` bytes."""
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    return subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=300, cwd=cwd,
                          preexec_fn=limit_file_size)
