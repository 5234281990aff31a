"""What a selection page costs against the size of the pool (egal report, egal.report.selection_report).

The same 30 selected rows and 12 examples are shown for a 1,000-row and a 100,000-row pool: 100 distinct scans
(files referenced by image_path / mask_path) repeated under new ids, with the scores of their scans
(tests/test_report_selection.py's repeated_pool). Two measurements per size, in one pytest-benchmark run:

  selection page   the whole call: read the scores, open (validate) the pool, decode and explain the rows shown,
                   bin the scatter, write the page
  open_pool        the pool's validation alone (egal.pool.open_pool: ids unique, every referenced file inside
                   the pool folder), which the page shares with egal score

    pytest bench/bench_report.py --benchmark-only --benchmark-columns=min,median,rounds
"""
from __future__ import annotations

import pytest

from egal.pool import open_pool
from egal.report import selection_report
from test_report_selection import repeated_pool, scored_pool

SIZES = (1_000, 100_000)
ROUNDS = 2


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report-bench")
    base = scored_pool(folder, n=100, storage="path", roi="mask_path", bad_rows=())
    return base, {rows: repeated_pool(base, folder, rows // 100) for rows in SIZES}


@pytest.mark.parametrize("rows", SIZES)
def test_selection_page(benchmark, pools, rows, tmp_path):
    base, made = pools
    scores, pool = made[rows]
    benchmark.group = "selection page, 30 selected + 12 examples"
    report = benchmark.pedantic(selection_report, args=(scores, pool, base["onnx"]),
                                kwargs={"out": tmp_path, "select": 30, "overwrite": True, "progress": False},
                                rounds=ROUNDS, iterations=1)
    assert report.gradcam_rows <= 42


@pytest.mark.parametrize("rows", SIZES)
def test_open_pool(benchmark, pools, rows):
    _, made = pools
    benchmark.group = "open_pool (validation)"
    spec = benchmark.pedantic(open_pool, args=(made[rows][1],), rounds=ROUNDS, iterations=1)
    assert spec.num_rows == rows
