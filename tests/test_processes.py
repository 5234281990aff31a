"""egal._processes: spawned workers that do not run the caller's __main__ again, and messages whose arrays
cross the pipe out of band, unchanged."""
import multiprocessing
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from egal._processes import recv_message, send_message, start_spawned, widen_pipe

SPAWN = multiprocessing.get_context("spawn")


def _echo(tasks, results):
    """Worker: sends every message it receives back, until its task pipe closes."""
    while True:
        try:
            message = recv_message(tasks)
        except EOFError:
            return
        send_message(results, message)


def _half_then_die(results):
    """Worker: announces a 1 MB buffer, writes a part of it, and ends."""
    results.send_bytes(struct.pack("<Q", 1 << 20))
    results.send_bytes(b"not a pickle that is ever read")
    os.write(results.fileno(), b"x" * 1000)
    os._exit(0)


def _messages():
    rng = np.random.default_rng(0)
    images = rng.random((5, 1, 33, 17), dtype=np.float32)
    return [
        {"images": images, "masks": (images[:, 0] > 0.5).astype(np.uint8), "ids": ["a", "b", "c", "d", "e"]},
        ("ok", {"fortran": np.asfortranarray(rng.random((7, 3))), "empty": np.zeros((0, 4), np.int64)}),
        {"every_other_column": images[..., ::2], "float16": images.astype(np.float16)},  # the first in band
        ("error", (ValueError("row 3: not an image"), "Traceback ...")),
        [b"raw bytes", None, 3, "text"],
    ]


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Exception):
        return type(a) is type(b) and a.args == b.args
    return a == b


def test_messages_go_through_a_worker_and_back_unchanged():
    task_reader, task_writer = SPAWN.Pipe(duplex=False)
    result_reader, result_writer = SPAWN.Pipe(duplex=False)
    widen_pipe(task_writer)
    worker = SPAWN.Process(target=_echo, args=(task_reader, result_writer), daemon=True)
    start_spawned(worker)
    task_reader.close()
    result_writer.close()
    try:
        for message in _messages():
            send_message(task_writer, message)
            back = recv_message(result_reader)
            assert _same(message, back), message
        big = np.arange(3 << 20, dtype=np.float32).reshape(3, 1 << 20)  # 12 MB: many pipe-fulls
        send_message(task_writer, {"images": big})
        back = recv_message(result_reader)["images"]
        assert np.array_equal(back, big) and back.flags.writeable and back.flags.c_contiguous
        back[0, 0] = -1.0  # the receiver owns its copy
        assert big[0, 0] == 0.0
    finally:
        task_writer.close()
        worker.join(30)
    assert worker.exitcode == 0


def test_a_writer_gone_in_the_middle_of_a_message_is_end_of_file():
    reader, writer = SPAWN.Pipe(duplex=False)
    worker = SPAWN.Process(target=_half_then_die, args=(writer,), daemon=True)
    start_spawned(worker)
    writer.close()
    with pytest.raises(EOFError, match="in the middle of a message"):
        recv_message(reader)
    worker.join(30)


def test_an_unpicklable_message_writes_nothing():
    reader, writer = SPAWN.Pipe(duplex=False)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):  # which one depends on the Python
        send_message(writer, {"images": np.zeros(3), "callback": lambda: None})
    assert not reader.poll(0.1)
    send_message(writer, "still usable")
    assert recv_message(reader) == "still usable"


# A main script with no `if __name__ == "__main__":` guard that decodes with two workers, and that leaves a
# mark for every time it runs. multiprocessing's spawn would run it again in each worker (which would then try
# to start workers of their own: a RuntimeError, seen as a dead decoder).
UNGUARDED = textwrap.dedent("""
    import os, sys
    from egal.pool import DecodeSettings, load_pool_arrays

    with open(sys.argv[2], "a") as marks:
        marks.write(f"{os.getpid()}\\n")
    arrays = load_pool_arrays(sys.argv[1], DecodeSettings((16, 16)), workers=2)
    print("rows", len(arrays["ids"]), "main is", __name__)
""")


def _run_script(tmp_path, source: str) -> tuple[str, int]:
    """Run `source` as a main script on a 6-row pool: (its stdout, how many processes ran the script)."""
    from pools import make_rows, write_pool

    pool = write_pool(tmp_path / "pool.parquet", make_rows(6, folder=tmp_path, size=16))
    script, marks = tmp_path / "script.py", tmp_path / "marks.txt"
    script.write_text(source)
    done = subprocess.run([sys.executable, str(script), str(pool), str(marks)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout, len(marks.read_text().split())


def test_workers_do_not_run_the_callers_main_script(tmp_path):
    stdout, runs = _run_script(tmp_path, UNGUARDED)
    assert "rows 6 main is __main__" in stdout
    assert runs == 1, "a worker ran the main script again"


class _Recorded:
    """Stands for a Process: what multiprocessing would tell a child started now, from this thread and another."""

    def start(self):
        from multiprocessing import spawn

        self.main_module = sys.modules["__main__"]
        self.here = spawn.get_preparation_data("child")
        other = {}
        thread = threading.Thread(target=lambda: other.update(spawn.get_preparation_data("child")))
        thread.start()
        thread.join()
        self.other_thread = other


def test_only_this_threads_start_leaves_out_the_main_script():
    from multiprocessing import spawn

    main = sys.modules["__main__"]
    usual = spawn.get_preparation_data("child")
    assert {"init_main_from_name", "init_main_from_path"} & usual.keys()  # pytest's main: spawn would run it
    process = _Recorded()
    start_spawned(process)
    assert process.main_module is main and sys.modules["__main__"] is main  # never swapped
    assert not {"init_main_from_name", "init_main_from_path"} & process.here.keys()
    assert process.other_thread.keys() == usual.keys()  # another thread starting a process meanwhile: as usual
    assert spawn.get_preparation_data("child").keys() == usual.keys()  # and after


class _FromMain:
    """Pickles as a reference to __main__ (where it cannot be found: then the start fails as spawn's would)."""
    __module__ = "__main__"


def test_a_caller_object_from_the_main_script_starts_the_child_as_spawn_does():
    process = _Recorded()
    start_spawned(process, caller_objects=(_FromMain(),))
    assert {"init_main_from_name", "init_main_from_path"} & process.here.keys()


# A guarded script whose DecodeSettings subclass lives in the script itself: its workers must run the script to
# rebuild the settings, and do (each leaves a mark).
SETTINGS_IN_MAIN = textwrap.dedent("""
    import dataclasses, os, sys
    from egal.pool import DecodeSettings, load_pool_arrays

    with open(sys.argv[2], "a") as marks:
        marks.write(f"{os.getpid()}\\n")

    @dataclasses.dataclass(frozen=True)
    class MySettings(DecodeSettings):
        pass

    if __name__ == "__main__":
        arrays = load_pool_arrays(sys.argv[1], MySettings((16, 16)), workers=2)
        print("rows", len(arrays["ids"]))
""")


def test_settings_defined_in_the_main_script_reach_the_workers(tmp_path):
    stdout, runs = _run_script(tmp_path, SETTINGS_IN_MAIN)
    assert "rows 6" in stdout
    assert runs >= 2  # the script, then each worker it started (6 rows: maybe one)
