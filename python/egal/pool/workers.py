"""Worker processes that never outlive the process that started them.

A decoder worker blocked on its task queue would otherwise wait forever once its
parent is gone (killed with SIGKILL, say): the queue's pipe stays open in the
worker itself, so it never sees end-of-file, and it keeps the caller's stdout and
stderr open. `watch_parent` is the initializer of every worker pool egal starts:

  * on Linux, the kernel sends the worker SIGKILL the moment its parent dies
    (prctl PR_SET_PDEATHSIG), checked against a parent that died before the call;
  * everywhere, a daemon thread also checks every WATCH_INTERVAL_S seconds that the
    parent is still the one it started with, and ends the worker when it is not;
  * SIGINT is ignored: Ctrl-C in a terminal reaches the whole process group, and it
    is the parent that stops the run (shutting its workers down in order).

Workers started through a forkserver are children of the forkserver, which exits
when its own parent does; they follow it the same way (pass parent_pid=None).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

WATCH_INTERVAL_S = 0.5
_PR_SET_PDEATHSIG = 1


def watch_parent(parent_pid=None) -> None:
    """Pool initializer: end this worker when its parent is gone.

    parent_pid: the pid of the process that starts the workers, when they are its
    children (spawn); None where they are a forkserver's (their parent now is taken).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_pid is None:
        parent_pid = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the thread below still does the job
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), name="egal-parent-watch", daemon=True).start()


def _watch(parent_pid: int) -> None:
    while True:
        time.sleep(WATCH_INTERVAL_S)
        if os.getppid() != parent_pid:
            os._exit(1)
