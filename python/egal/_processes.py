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
  * a main script that imports PyTorch makes every worker import it too: 2 s for
    two decoders on this project's 2-core machine before the first batch.

`send_message` / `recv_message` carry a picklable message whose large buffers
(numpy arrays: a decoded batch is 32 MB at 128 x 224 x 224) go out of band
(pickle protocol 5): the pickle holds only their layout, and the bytes go straight
from the array through the pipe into the receiver's buffer, with no pickled copy
on either side. On one 2-core machine a 32 MB batch took 86 ms through
Connection.send/recv and 23 ms this way with a 1 MiB pipe (bench/README.md).
"""
from __future__ import annotations

import contextlib
import os
import pickle
import sys
import types

PIPE_BYTES = 1 << 20  # Linux's default most for an unprivileged process (/proc/sys/fs/pipe-max-size)
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Python >= 3.10 names it; the number is Linux's)


def start_spawned(process) -> None:
    """process.start() for a process of the "spawn" context, without the caller's __main__ in the child.

    For the instant of the start, `__main__` is an empty module: multiprocessing then asks the child to run
    neither a main script nor a main module.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        process.start()
    finally:
        if main is None:
            del sys.modules["__main__"]
        else:
            sys.modules["__main__"] = main


def widen_pipe(connection) -> None:
    """Let the pipe under `connection` hold PIPE_BYTES (fewer, larger writes and reads); where the system does
    not allow it, it stays as it is."""
    with contextlib.suppress(Exception):
        import fcntl

        fcntl.fcntl(connection.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)


def send_message(connection, message) -> None:
    """Send `message` through a multiprocessing Connection (a pipe end), its buffers out of band.

    Raises what pickling raises before anything is written (the pipe stays usable), and OSError when the other
    end is gone.
    """
    buffers: list[pickle.PickleBuffer] = []
    header = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    views = [buffer.raw() for buffer in buffers]  # contiguous byte views of the arrays' own memory
    connection.send((header, [view.nbytes for view in views]))
    descriptor = connection.fileno()
    for view in views:
        while view.nbytes:
            view = view[os.write(descriptor, view):]


def recv_message(connection):
    """The next message that send_message wrote to the other end of `connection`.

    EOFError when the writer is gone, also halfway through a message.
    """
    header, sizes = connection.recv()
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
