"""Decoding batches in worker processes: egal's one way to decode in parallel.

`decode_in_order` is what both `egal score` (egal.pipeline.local_engine) and
`load_pool_arrays` decode with: `workers` spawned processes (forking a process
that may hold PyTorch's or OpenMP's threads is unsafe) that do not run the
caller's main script again, batches handed out in turn, a bounded window of
2 * workers batches in flight (memory does not grow with the pool), results in
order. Decoded arrays cross the pipes out of band, uncopied by pickle
(egal._processes).

A worker that dies (killed, out of memory) is noticed at once and raised as
DecoderDied, whatever it was doing. That is why each worker has pipes of its own
whose other ends only that worker holds: a worker killed halfway through
sending a decoded batch leaves the reader at end-of-file, an error, instead of
waiting forever for the rest of the message. (A multiprocessing.Pool waits forever
for a lost task; a concurrent.futures.ProcessPoolExecutor, whose workers share one
result pipe that the parent also holds open, hangs the same way when the worker
dies in the middle of sending a result: seen with Python 3.11.)

The workers never outlive the process that started them, even when it is killed
(SIGKILL, say) while they decode or send: a worker left behind would keep the
caller's stdout and stderr open. A worker waiting for a task sees end-of-file when
its parent is gone, and `watch_parent` (egal._processes), the first thing every
worker runs, covers the rest:

  * on Linux, the kernel sends the worker SIGKILL the moment its parent dies
    (prctl PR_SET_PDEATHSIG), checked against a parent that died before the call;
  * everywhere, a daemon thread also checks every half second that the
    parent is still the one it started with, and ends the worker when it is not;
  * SIGINT is ignored: Ctrl-C in a terminal reaches the whole process group, and it
    is the parent that stops the run (shutting its workers down in order).
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import queue
import threading
import time
import traceback
from collections.abc import Iterable, Iterator

from .._checks import bad_argument
from .._processes import recv_message, send_message, start_spawned, watch_parent, widen_pipe
from ..errors import EgalError
from .batches import RawBatch
from .decode import DecodedBatch, DecodeSettings, decode_batch
from .errors import DecoderDied

STOP_TIMEOUT_S = 5.0  # a worker asked to stop (SIGTERM) is killed after this long


def max_local_workers() -> int:
    """The most decoder processes egal starts on this machine: twice the CPUs (more only queue for the cores and
    cost memory; a mistyped 1000 would start a thousand processes)."""
    return 2 * (os.cpu_count() or 1)


def check_worker_count(workers: int, name: str = "workers") -> None:
    """EgalError naming `name` when `workers` decoder processes are more than max_local_workers()."""
    if workers > max_local_workers():
        raise bad_argument(EgalError, name, f"{workers} is more decoder processes than this machine's "
                           f"{os.cpu_count()} CPUs can use: at most {max_local_workers()} here")


def decode_in_order(raw_batches: Iterable[RawBatch], settings: DecodeSettings, workers: int) -> Iterator[DecodedBatch]:
    """decode_batch of every RawBatch, in order: in this process (workers=0) or in `workers` spawned
    worker processes, at most 2 * workers batches ahead of the consumer.

    A dead worker raises DecoderDied (the caller may add what is kept and how to go on); an exception
    inside decode_batch is raised here, with the worker's traceback as its cause. Closing the generator
    (or an exception, Ctrl-C, SIGTERM in the consumer) drops the batches not yet decoded and ends the
    workers before it returns.
    """
    if workers <= 0:
        for raw in raw_batches:
            yield decode_batch(raw, settings)
        return
    decoders = _Decoders(workers, settings)
    try:
        in_flight: collections.deque = collections.deque()  # the worker of each batch in flight, in order
        for i, raw in enumerate(raw_batches):
            worker = i % workers  # in turn: each worker's results come back in the order of its tasks
            decoders.submit(worker, raw)
            in_flight.append(worker)
            if len(in_flight) >= 2 * workers:
                yield decoders.result(in_flight.popleft())
        while in_flight:
            yield decoders.result(in_flight.popleft())
    finally:
        decoders.close()


class _Decoders:
    """Worker processes, each with a task pipe and a result pipe of its own.

    Tasks are written by a thread of this process (`_send_tasks`), so that handing out a batch never
    waits for a busy worker, while this thread reads results. No multiprocessing.Queue (nor its
    semaphores) is involved: a killed run leaves nothing for the resource tracker to clean up.
    """

    def __init__(self, workers: int, settings: DecodeSettings):
        context = multiprocessing.get_context("spawn")
        self.tasks: list = []  # the writing end of each worker's task pipe
        self.results: list = []  # the reading end of each worker's result pipe
        self.processes: list = []
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()  # (worker, RawBatch), or None to stop
        self.sender = threading.Thread(target=self._send_tasks, name="egal-decoder-tasks", daemon=True)
        try:
            for _ in range(workers):
                task_reader, task_writer = context.Pipe(duplex=False)
                result_reader, result_writer = context.Pipe(duplex=False)
                process = context.Process(target=_decoder_main,
                                          args=(task_reader, result_writer, settings, os.getpid()),
                                          name="egal-decoder", daemon=True)
                self.tasks.append(task_writer)
                self.results.append(result_reader)
                self.processes.append(process)
                widen_pipe(result_reader)  # decoded arrays; tasks are small (encoded bytes)
                try:
                    start_spawned(process, caller_objects=(settings,))
                finally:
                    # The worker holds the only other ends: its death is end-of-file (results) and a broken
                    # pipe (tasks) here.
                    task_reader.close()
                    result_writer.close()
            self.sender.start()
        except BaseException:
            self.close()
            raise

    def submit(self, worker: int, raw: RawBatch) -> None:
        self.outbox.put((worker, raw))

    def _send_tasks(self) -> None:
        pipes = list(self.tasks)
        while True:
            item = self.outbox.get()
            if item is None:
                return
            worker, raw = item
            try:
                send_message(pipes[worker], raw)
            except (OSError, ValueError):  # the worker is gone (result() says so), or the pipe closed by close()
                pass
            except Exception as exc:  # a batch that cannot be pickled, or no memory to: the worker hands back
                # an error in its place, so that result() raises it in turn, after the batches before it
                with contextlib.suppress(OSError, ValueError):
                    send_message(pipes[worker], _Unsendable(f"{type(exc).__name__}: {exc}"))

    def result(self, worker: int) -> DecodedBatch:
        reader, process = self.results[worker], self.processes[worker]
        ready = multiprocessing.connection.wait([reader, process.sentinel])
        message = None
        if reader in ready:  # a result, or end-of-file (the worker is gone, maybe halfway through a message)
            try:
                message = recv_message(reader)
            except (EOFError, OSError):
                message = None
        if message is None:
            process.join(STOP_TIMEOUT_S)
            code = "" if process.exitcode is None else f"; exit code {process.exitcode}"
            raise DecoderDied(f"a decoder worker process died (killed, or out of memory{code})")
        kind, value = message
        if kind == "error":
            exception, text = value
            exception.__cause__ = RuntimeError(f"in the decoder worker process:\n{text}")
            raise exception
        return value

    def close(self) -> None:
        """End the workers now (what they have not decoded yet is dropped) and release the pipes."""
        self.outbox.put(None)
        for process in self.processes:
            if process.pid is not None and process.is_alive():
                process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in self.processes:
            if process.pid is None:  # never started
                continue
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        if self.sender.is_alive():  # its pipes have no reader now: a send in progress fails at once
            self.sender.join(STOP_TIMEOUT_S)
        for connection in self.tasks + self.results:
            connection.close()
        self.tasks, self.results, self.processes = [], [], []


@dataclasses.dataclass(frozen=True)
class _Unsendable:
    """Sent in place of a batch that could not be pickled to the worker: why."""
    reason: str


def _decoder_main(tasks, results, settings: DecodeSettings, parent_pid: int) -> None:
    """A decoder worker: decode the batches that come through `tasks` one by one, sending each result
    (or the error) through `results`; ends when `tasks` is closed."""
    watch_parent(parent_pid)
    while True:
        try:
            raw = recv_message(tasks)
        except EOFError:
            return
        try:
            if isinstance(raw, _Unsendable):
                raise RuntimeError(f"a batch could not be handed to a decoder worker process ({raw.reason})")
            message = ("ok", decode_batch(raw, settings))
        except Exception as exc:  # decode_batch keeps bad rows to itself; anything else goes to the parent
            message = ("error", (exc, traceback.format_exc()))
        try:
            send_message(results, message)
        except (OSError, EOFError):
            return  # the parent is gone or stopped reading
        except Exception as exc:  # e.g. an exception that cannot be pickled (nothing was written)
            send_message(results, ("error", (RuntimeError(f"{type(exc).__name__}: {exc}"), traceback.format_exc())))
