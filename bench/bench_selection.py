"""Choosing K = 1,000 rows from 1,000,000 scored rows with 512-d embeddings (egal.selection).

Run: python bench/bench_selection.py  (runs this file under pytest-benchmark and prints the table for
bench/README.md; `python -m pytest bench/bench_selection.py --benchmark-only` runs it alone).

One session builds the data once: 1,000,000 scores rounded to 4 decimals (so there are ties; 1 %
NaN, rows in error) with unique ids, and an embeddings file as `egal score --embeddings` writes it
(egal.selection.embedding_file: 1,000,000 x 512 float32, 2 GB, row groups of 16,384 rows) in a
temporary folder. Then, in the same run:

  top k, full sort      egal.select_top_k: lexsort of every valid row (the paper's rule as it always was)
  top k, partition      select_batch(diversity="none"): ranked_positions, a partition then a sort of K rows
  k-center, from file   select_batch(diversity="kcenter", embeddings=EmbeddingFile): the top 10 K rows'
                        embeddings read from the file, then greedy k-center
  cluster, from file    the same with k-means into K clusters (at most 20 Lloyd iterations)

timed in CPU seconds of this process (all its threads; the wall time is recorded too: on a shared
machine it also counts the other work), and the memory of each: a fresh process loads the scores
and ids, makes one selection, and reports its resident memory before and its peak (ru_maxrss);
the file's 2 GB are never in memory at once. Complexity: finding the candidates is O(N) (a
partition on the score) plus O(m K log m K) to order them; reading them is one pass over the
file's row groups that hold a candidate, keeping only those rows; k-center is O(K * mK * D), one
matrix-vector product per pick; k-means is O(iterations * mK * K * D), matrix products in blocks.
With m = 10, K = 1,000, D = 512: 5e9 multiply-adds for k-center, 5e9 per k-means iteration.
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time

import numpy as np
import pytest

from _cpu_run import cpu_model, run_own_benchmarks
from egal.selection import select_batch, select_top_k
from egal.selection.embedding_file import EmbeddingFile, embedding_array, write_embedding_file

ROWS = int(os.environ.get("EGAL_BENCH_SELECTION_ROWS", 1_000_000))
DIM = 512
K = 1000
CHUNK = 16384


@pytest.fixture(scope="session")
def pool(tmp_path_factory):
    import pyarrow as pa

    rng = np.random.default_rng(0)
    scores = np.round(rng.random(ROWS), 4)
    scores[rng.choice(ROWS, ROWS // 100, replace=False)] = np.nan
    ids = np.array([f"scan_{i:07d}" for i in range(ROWS)])
    path = tmp_path_factory.mktemp("selection") / "scores.embeddings.parquet"

    def chunks():
        for start in range(0, ROWS, CHUNK):
            n = min(CHUNK, ROWS - start)
            vectors = rng.standard_normal((n, DIM), dtype=np.float32)
            valid = ~np.isnan(scores[start:start + n])
            yield pa.table({"id": ids[start:start + n], "embedding": embedding_array(vectors, valid)})

    write_embedding_file(str(path), chunks(), run={"bench": "selection"}, kind=f"random ({DIM}-d)")
    np.save(path.parent / "scores.npy", scores)
    np.save(path.parent / "ids.npy", ids)
    return scores, ids, str(path)


MEASURE = """
import resource, sys
import numpy as np, psutil
from egal.selection import select_batch, select_top_k
from egal.selection.embedding_file import EmbeddingFile
folder, diversity = sys.argv[1], sys.argv[2]
scores, ids = np.load(folder + "/scores.npy"), np.load(folder + "/ids.npy")
before = psutil.Process().memory_info().rss
if diversity == "full-sort":
    select_top_k(scores, ids, {k})
else:
    source = EmbeddingFile(folder + "/scores.embeddings.parquet") if diversity != "none" else None
    select_batch(scores, ids, {k}, diversity=diversity, embeddings=source)
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def peak_memory(folder: str, diversity: str) -> tuple:
    """(RSS with the scores and ids loaded, peak RSS) of a fresh process that makes one selection, in MiB."""
    out = subprocess.run([sys.executable, "-c", MEASURE.format(k=K), folder, diversity], capture_output=True,
                         text=True, check=True).stdout.split()
    return int(out[0]) / 2**20, int(out[1]) / 2**20


@pytest.mark.parametrize("impl", ["top k, full sort", "top k, partition", "k-center, from file", "cluster, from file"])
def test_select_1000_of_a_million(benchmark, pool, impl):
    scores, ids, path = pool
    benchmark.group = f"K={K} of N={ROWS}, D={DIM}"
    benchmark.extra_info.update(impl=impl, rows=ROWS, k=K, dim=DIM)
    diversity = {"top k, full sort": "full-sort", "top k, partition": "none", "k-center, from file": "kcenter",
                 "cluster, from file": "cluster"}[impl]
    walls = []

    def timed(fn):
        def run():
            start = time.perf_counter()
            result = fn()
            walls.append(time.perf_counter() - start)
            return result
        return run

    if diversity == "full-sort":
        chosen = benchmark.pedantic(timed(lambda: select_top_k(scores, ids, K)), rounds=3, iterations=1)
        assert len(chosen) == K
    else:
        source = EmbeddingFile(path) if diversity != "none" else None
        chosen = benchmark.pedantic(timed(lambda: select_batch(scores, ids, K, diversity=diversity, embeddings=source)),
                                    rounds=3, iterations=1)
        assert len(chosen.ids) == K
        if diversity == "none":  # the same rows as the full sort, in the same order
            assert chosen.ids.tolist() == select_top_k(scores, ids, K).tolist()
    loaded, peak = peak_memory(os.path.dirname(path), diversity)
    benchmark.extra_info.update(rss_loaded_mib=loaded, rss_peak_mib=peak, wall_min_s=min(walls),
                                wall_median_s=float(np.median(walls)))


def table(data) -> str:
    bench = {b["extra_info"]["impl"]: b for b in data["benchmarks"]}
    base = bench["top k, full sort"]["stats"]["min"]
    lines = ["| method | CPU s, best of 3 | wall s, best of 3 | CPU time vs top k, full sort | "
             "RSS with scores loaded (MiB) | peak RSS (MiB) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for impl in ("top k, full sort", "top k, partition", "k-center, from file", "cluster, from file"):
        b = bench[impl]
        info = b["extra_info"]
        lines.append(f"| {impl} | {b['stats']['min']:.2f} | {info['wall_min_s']:.2f} | "
                     f"{b['stats']['min'] / base:.2f}x | {info['rss_loaded_mib']:.0f} | {info['rss_peak_mib']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    data = run_own_benchmarks(__file__)
    model = cpu_model()
    print(f"{datetime.date.today()}, {model}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"numpy {np.__version__}; load average at the end {os.getloadavg()[0]:.1f}")
    print(table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
