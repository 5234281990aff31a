"""Worker processes for egal: starting them, and moving large arrays to and from them.

Both of egal's worker kinds (the decoders of `egal score`, egal.pool.workers; the
experiment's run workers, egal.loop.workers) are spawned, not forked: forking a
process that holds PyTorch's or OpenMP's threads is unsafe.

`start_spawned` starts such a process without running the caller's `__main__`
again in it. multiprocessing's spawn re-runs the main script in every child so
that functions defined there can be found; egal's targets live in egal, so that
buys nothing and costs twice:
  * a script that calls egal without an `if __name__ == "__main__":` guard would
    start workers from its workers (multiprocessing's RuntimeError, seen as a
    dead decoder);
  * a main script that imports PyTorch makes every worker import it too: 64 rows
    with two decoders took 2.27 s from such a script against 0.62 s without
    (this project's 2-core machine, bench/README.md).
So a worker starts from a fresh interpreter that imports egal, not the caller's
script: what that script sets when it is imported (PIL's MAX_IMAGE_PIXELS, say)
does not reach the workers, as what it sets under its main guard never did.
Only where the caller hands over an object of a class defined in its main script
(a DecodeSettings subclass, say) does the worker run that script, as spawn does.

`send_message` / `recv_message` carry a picklable message whose large buffers
(numpy arrays: a decoded batch is 32 MB at 128 x 224 x 224) go out of band
(pickle protocol 5): the pickle holds only their layout, and the bytes go straight
from the array through the pipe into the receiver's buffer, with no pickled copy
on either side. On this project's 2-core machine a 32 MB batch's round trip took
132.5 ms through Connection.send/recv and 44.6 ms this way (bench/README.md).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import struct
import sys
import threading
import time
from multiprocessing import spawn

PIPE_BYTES = 1 << 20  # 256 pages: 64 such pipes would fill Linux's usual per-user soft limit (16,384 pages)
_LENGTH = struct.Struct("<Q")
WATCH_INTERVAL_S = 0.5
_PR_SET_PDEATHSIG = 1


def start_spawned(process, *, caller_objects=()) -> None:
    """process.start() for a process of the "spawn" context, without running the caller's __main__ in the child
    when none of `caller_objects` (what the caller handed over: settings, say) needs it.

    An object of a class defined in the main script can only be rebuilt in a child that runs that script: then
    the child starts as multiprocessing starts it. The change is local to this thread's start: other threads,
    and other users of multiprocessing, see `__main__` and spawn as they always are.
    """
    if any(_references_main(obj) for obj in caller_objects):
        process.start()
        return
    _filter_preparation_data()
    _this_thread.without_main = True
    try:
        process.start()
    finally:
        _this_thread.without_main = False


_this_thread = threading.local()
_filter_lock = threading.Lock()


def _filter_preparation_data() -> None:
    """Wrap multiprocessing.spawn.get_preparation_data (once per process) so that a start under
    start_spawned leaves out what tells the child to run the main script or module."""
    with _filter_lock:
        if getattr(spawn.get_preparation_data, "_egal_without_main", False):
            return
        original = spawn.get_preparation_data

        def get_preparation_data(name):
            data = original(name)
            if getattr(_this_thread, "without_main", False):
                data.pop("init_main_from_name", None)
                data.pop("init_main_from_path", None)
            return data

        get_preparation_data._egal_without_main = True
        spawn.get_preparation_data = get_preparation_data


def _references_main(obj) -> bool:
    """Whether unpickling `obj` would import something from __main__ (conservative: a "__main__" string in the
    pickle counts too, and so does an object that does not pickle, whose start then fails as spawn's would; it
    only costs the child a run of the main script, as spawn does anyway)."""
    try:
        return b"__main__" in pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return True


def widen_pipe(connection) -> None:
    """Let the pipe under `connection` hold PIPE_BYTES (fewer, larger writes and reads), on Linux; elsewhere, or
    past the user's pipe quota, it stays as it is. For pipes that carry large arrays only (a decoder's results):
    every widened pipe counts against a quota that the user's other programs share while it is open."""
    with contextlib.suppress(Exception):
        import fcntl

        fcntl.fcntl(connection.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def send_message(connection, message) -> None:
    """Send `message` through a multiprocessing Connection (a pipe end), its buffers out of band.

    Raises what pickling raises before anything is written (the pipe stays usable), and OSError when the other
    end is gone.
    """
    buffers: list[pickle.PickleBuffer] = []
    header = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    views = [buffer.raw() for buffer in buffers]  # contiguous byte views of the arrays' own memory
    connection.send_bytes(b"".join(_LENGTH.pack(view.nbytes) for view in views))
    connection.send_bytes(header)
    descriptor = connection.fileno()
    for view in views:
        while view.nbytes:
            view = view[os.write(descriptor, view):]


def recv_message(connection):
    """The next message that send_message wrote to the other end of `connection`.

    EOFError when the writer is gone, also halfway through a message.
    """
    sizes = [size for (size,) in _LENGTH.iter_unpack(connection.recv_bytes())]
    header = connection.recv_bytes()
    descriptor = connection.fileno()
    buffers = []
    for size in sizes:
        buffer = bytearray(size)  # writable: the arrays built on it are too
        view = memoryview(buffer)
        while view.nbytes:
            got = os.readv(descriptor, [view])
            if got == 0:
                raise EOFError("the other end closed the pipe in the middle of a message")
            view = view[got:]
        buffers.append(buffer)
    return pickle.loads(header, buffers=buffers)


def watch_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker when its parent, the process `parent_pid` that started it, is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
