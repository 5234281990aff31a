"""The label column at `egal score`'s start-up and finalize: the per-cell rule as it was against read_labels.

Run: python bench/bench_score_startup.py  (runs this file under pytest-benchmark and prints the table for
bench/README.md; `python -m pytest bench/bench_score_startup.py --benchmark-only` runs it alone;
EGAL_BENCH_STARTUP_ROWS=200000 for a smaller pool).

Before 2026-11-28 a scoring run read its pool's label column two or three times, each time turning every cell
into a Python object and calling is_label on it (egal.pool.labels.labelled_rows, label_counts, reproduced below
as they were): label_counts for the label warnings, labelled_rows for the output's `labelled` column when the
run finalizes, and labelled_rows once more for a cap per group (the rows that may be selected need a group).
Now the run reads it once (read_labels, kept by the ScoringJob) and is_label / label_key decide once per
distinct value of each block of 65,536 rows (pyarrow's dictionary_encode), not once per cell.

One session writes a pool of ROWS rows (one tiny PNG repeated, string ids, row groups of 256 rows as
egal.pool.writer writes them) for each kind of label column:
  5 % labelled    three classes on 5 % of the rows, null elsewhere (a pool being annotated)
  all labelled    three classes on every row but one 'nan' and one blank (a pool studied rather than annotated)
and times, in CPU seconds of this process (the wall time is recorded too):
  per cell: labelled_rows, per cell: label_counts   the rule as it was, one read each
  read_labels                                       what a scoring run does now, its one read
  the column read alone                             the floor: the label column's Arrow arrays, nothing done
  open_pool                                         for scale: the pool's checks (ids, schema), which every run does
The two rules' results are checked equal before timing.
"""
from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from _cpu_run import cpu_model, run_own_benchmarks
from egal.pool import open_pool
from egal.pool.encode import encode_png
from egal.pool.labels import LABEL_COLUMN, is_label, label_key, read_labels
from egal.pool.writer import write_pool_file

ROWS = int(os.environ.get("EGAL_BENCH_STARTUP_ROWS", 1_000_000))
KINDS = ("5 % labelled", "all labelled")
IMPLS = ("per cell: labelled_rows", "per cell: label_counts", "read_labels", "the column read alone", "open_pool")


def per_cell_labelled_rows(spec, column: str = LABEL_COLUMN):
    """egal.pool.labels.labelled_rows before 2026-11-28: is_label on every cell, as a Python object."""
    if column not in spec.columns:
        return np.zeros(spec.num_rows, dtype=bool)
    flags = [is_label(value) for value in spec.column_values(column)]
    return np.asarray(flags, dtype=bool)


def per_cell_label_counts(spec, column: str = LABEL_COLUMN) -> dict:
    """egal.pool.labels.label_counts before 2026-11-28: label_key on every cell, as a Python object."""
    if column not in spec.columns:
        return {}
    counts = Counter(label_key(value) for value in spec.column_values(column))
    counts.pop(None, None)
    return dict(counts)


def column_read_alone(spec, column: str = LABEL_COLUMN) -> int:
    return sum(len(array) for array in spec.column_arrays(column))


@pytest.fixture(scope="session")
def pools(tmp_path_factory):
    folder = tmp_path_factory.mktemp("startup")
    rng = np.random.default_rng(0)
    ids = pa.array([f"scan_{i:07d}" for i in range(ROWS)])
    images = pa.array([encode_png(np.full((32, 32), 100, np.uint8))] * ROWS, type=pa.binary())
    paths = {}
    for kind in KINDS:
        labels = np.array(["benign", "malignant", "normal"], dtype=object)[rng.integers(0, 3, ROWS)]
        if kind == "5 % labelled":
            labels[rng.random(ROWS) >= 0.05] = None
        else:
            labels[1], labels[2] = "nan", "  "
        path = folder / f"{kind.split()[0]}.parquet"
        write_pool_file(pa.table({"id": ids, "image": images, "label": pa.array(labels.tolist(), pa.string())}), path)
        paths[kind] = str(path)
    return paths


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", KINDS)
def test_label_column(benchmark, pools, kind, impl):
    spec = open_pool(pools[kind])
    labels = read_labels(spec)
    assert labels.rows.tolist() == per_cell_labelled_rows(spec).tolist()
    assert list(labels.counts.items()) == list(per_cell_label_counts(spec).items())
    run = {"per cell: labelled_rows": lambda: per_cell_labelled_rows(spec),
           "per cell: label_counts": lambda: per_cell_label_counts(spec),
           "read_labels": lambda: read_labels(spec),
           "the column read alone": lambda: column_read_alone(spec),
           "open_pool": lambda: open_pool(pools[kind])}[impl]
    walls = []

    def timed():
        start = time.perf_counter()
        run()
        walls.append(time.perf_counter() - start)

    benchmark.group = f"{kind}, {ROWS} rows"
    benchmark.pedantic(timed, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(kind=kind, impl=impl, rows=ROWS, labelled=int(labels.rows.sum()),
                                wall_min_s=min(walls), wall_median_s=float(np.median(walls)))


def table(data) -> str:
    bench = {(b["extra_info"]["kind"], b["extra_info"]["impl"]): b for b in data["benchmarks"]}
    cpu = {key: b["stats"]["min"] for key, b in bench.items()}
    lines = ["| label column | labelled rows | per cell: labelled_rows | per cell: label_counts | before, a run "
             "(label_counts + labelled_rows) | before, with a group cap (+ labelled_rows) | after, a run "
             "(read_labels once) | speed-up, a run | speed-up, with a group cap | the column read alone | "
             "open_pool, for scale |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind in KINDS:
        rows, counts, new = (cpu[(kind, i)] for i in ("per cell: labelled_rows", "per cell: label_counts",
                                                       "read_labels"))
        before, capped = counts + rows, counts + 2 * rows
        info = bench[(kind, "read_labels")]["extra_info"]
        lines.append(f"| {kind} | {info['labelled']:,} | {rows:.3f} | {counts:.3f} | {before:.3f} | {capped:.3f} | "
                     f"{new:.3f} | {before / new:.1f}x | {capped / new:.1f}x | "
                     f"{cpu[(kind, 'the column read alone')]:.3f} | {cpu[(kind, 'open_pool')]:.3f} |")
    return "\n".join(lines)


def main() -> int:
    data = run_own_benchmarks(__file__)
    model = cpu_model()
    print(f"{datetime.date.today()}, {model}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"pyarrow {pa.__version__}, numpy {np.__version__}; {ROWS:,} rows; load average at the end "
          f"{os.getloadavg()[0]:.1f}")
    print(f"CPU seconds, best of 5 (wall seconds are in the JSON's extra_info):\n{table(data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
