"""Decoded batches from a worker process to `egal score`: the pipe transfer and the decoders' rows/s.

Run: python -m pytest bench/bench_decoders.py --benchmark-only --benchmark-columns=min,mean,rounds

In one run:

  transfer[connection]   one decoded batch (128 x 1 x 224 x 224 float32 images + 128 x 224 x 224 uint8
                         masks, 32 MB) echoed by a spawned process and received here, through
                         multiprocessing's Connection.send / recv (the pickle holds a copy of every array)
  transfer[out-of-band]  the same through egal._processes.send_message / recv_message (pickle protocol 5,
                         the arrays' bytes written from and read into their own memory, 1 MiB pipe)
  decode[N workers]      egal.pool.workers.decode_in_order over a 1,024-row synthetic pool (224 x 224 grey
                         PNG scans and masks, egal.demo_data.make_synthetic_pool), batch 128, decoding in
                         this process (0) or in N spawned workers, their start included, as `egal score`
                         runs them.

Each transfer round sends the batch to the echo process and receives it back: two crossings. The
ratios go to bench/README.md with the machine and the date.
"""
from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

from egal._processes import recv_message, send_message, start_spawned, widen_pipe

SPAWN = multiprocessing.get_context("spawn")
BATCH = 128


def _echo_connection(tasks, results):
    while True:
        try:
            results.send(tasks.recv())
        except EOFError:
            return


def _echo_out_of_band(tasks, results):
    while True:
        try:
            send_message(results, recv_message(tasks))
        except EOFError:
            return


TRANSFERS = {
    "connection": (_echo_connection, lambda c, m: c.send(m), lambda c: c.recv(), False),
    "out-of-band": (_echo_out_of_band, send_message, recv_message, True),
}


@pytest.mark.parametrize("transfer", list(TRANSFERS))
def test_transfer(benchmark, transfer):
    echo, send, receive, wide = TRANSFERS[transfer]
    rng = np.random.default_rng(0)
    batch = {"images": rng.random((BATCH, 1, 224, 224), dtype=np.float32),
             "masks": (rng.random((BATCH, 224, 224)) > 0.9).astype(np.uint8), "ids": [str(i) for i in range(BATCH)]}
    task_reader, task_writer = SPAWN.Pipe(duplex=False)
    result_reader, result_writer = SPAWN.Pipe(duplex=False)
    if wide:
        widen_pipe(task_writer)
        widen_pipe(result_reader)
    worker = SPAWN.Process(target=echo, args=(task_reader, result_writer), daemon=True)
    start_spawned(worker)
    task_reader.close()
    result_writer.close()

    def round_trip():
        send(task_writer, batch)
        return receive(result_reader)

    try:
        back = benchmark.pedantic(round_trip, rounds=15, warmup_rounds=2)
    finally:
        task_writer.close()
        worker.join(30)
    assert np.array_equal(back["images"], batch["images"]) and np.array_equal(back["masks"], batch["masks"])
    benchmark.extra_info["megabytes_each_way"] = round((batch["images"].nbytes + batch["masks"].nbytes) / 1e6, 1)


@pytest.fixture(scope="session")
def synthetic_pool(tmp_path_factory):
    from egal.demo_data import make_synthetic_pool

    return str(make_synthetic_pool(tmp_path_factory.mktemp("decoders"), n=1024, image_size=224))


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_decode(benchmark, synthetic_pool, workers):
    from egal.pool import DecodeSettings, open_pool
    from egal.pool.workers import decode_in_order

    def decode_all() -> int:
        rows = 0
        batches = decode_in_order(open_pool(synthetic_pool).iter_batches(BATCH), DecodeSettings((224, 224)), workers)
        try:
            for decoded in batches:
                rows += len(decoded.ids)
        finally:
            batches.close()
        return rows

    rows = benchmark.pedantic(decode_all, rounds=3, warmup_rounds=1)
    assert rows == 1024
    benchmark.extra_info["rows"] = rows
