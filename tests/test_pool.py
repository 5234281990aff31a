"""egal.pool: opening and validating pools, streaming batches, loading whole pools."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from egal.pool import (
    DecodeSettings,
    PoolError,
    PoolSpec,
    RawBatch,
    UndecodedRows,
    decode_batch,
    load_pool_arrays,
    open_pool,
)
from pool_files import png_grey, simple_pool, write_pool

# ---------------------------------------------------------------- open_pool


def test_open_single_file_describes_the_pool(tmp_path):
    path = simple_pool(tmp_path / "p.parquet", n=4, label=["a", None, "b", None],
                       boxes=[[[0, 0, 4, 4]], [], None, [[1, 1, 2, 2]]])
    spec = open_pool(path)
    assert isinstance(spec, PoolSpec)
    assert spec.files == (str(path.resolve()),)
    assert spec.num_rows == 4
    assert (spec.image_column, spec.roi_column) == ("image", "boxes") and "label" in spec.columns
    fingerprint = spec.fingerprint()
    assert json.loads(json.dumps(fingerprint)) == fingerprint
    assert fingerprint["files"][0]["size"] == path.stat().st_size
    assert fingerprint["files"][0]["mtime_ns"] == path.stat().st_mtime_ns


def test_fingerprint_changes_when_a_file_is_rewritten(tmp_path):
    path = simple_pool(tmp_path / "p.parquet", n=3)
    before = open_pool(path).fingerprint()
    simple_pool(path, n=4)
    os.utime(path, ns=(1, 1))
    assert open_pool(path).fingerprint() != before


def test_pool_without_roi_column_says_so(tmp_path):
    spec = open_pool(simple_pool(tmp_path / "p.parquet"))
    assert spec.roi_column is None and "label" not in spec.columns


def test_directory_reads_all_parquet_files_below_it_in_relative_path_order(tmp_path):
    write_pool(tmp_path / "pool" / "b" / "x.parquet", {"id": ["b0"], "image": [png_grey()]})
    write_pool(tmp_path / "pool" / "a.parquet", {"id": ["a0", "a1"], "image": [png_grey(), png_grey()]})
    write_pool(tmp_path / "pool" / "c.parquet", {"id": ["c0"], "image": [png_grey()]})
    (tmp_path / "pool" / "notes.txt").write_text("not part of the pool")
    spec = open_pool(tmp_path / "pool")
    assert [os.path.relpath(f, tmp_path / "pool") for f in spec.files] == ["a.parquet", "b/x.parquet", "c.parquet"]
    assert spec.num_rows == 4
    assert [i for b in spec.iter_batches(10) for i in b.ids] == ["a0", "a1", "b0", "c0"]


def refusal(path) -> str:
    with pytest.raises(PoolError) as info:
        open_pool(path)
    return str(info.value)


def test_refuses_missing_path_empty_directory_and_non_parquet(tmp_path):
    assert "does not exist" in refusal(tmp_path / "nope.parquet")
    (tmp_path / "empty").mkdir()
    assert "no *.parquet files" in refusal(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.parquet").write_bytes(b"this is not parquet")
    message = refusal(tmp_path / "bad")
    assert "a.parquet" in message and "not a readable Parquet file" in message
    (tmp_path / "data.csv").write_text("id,image\n1,2\n")
    assert "data.csv" in refusal(tmp_path / "data.csv")


def test_refuses_files_with_different_schemas_naming_the_file_and_column(tmp_path):
    write_pool(tmp_path / "p" / "1.parquet", {"id": ["a"], "image": [png_grey()], "label": ["x"]})
    write_pool(tmp_path / "p" / "2.parquet", {"id": ["b"], "image": [png_grey()], "label": [3]})
    message = refusal(tmp_path / "p")
    assert "2.parquet" in message and "'label'" in message and "int64" in message


@pytest.mark.parametrize(
    "columns, expected",
    [
        ({"name": ["a"], "image": [b"x"]}, "no 'id' column"),
        ({"id": ["a"]}, "found neither"),
        ({"id": ["a"], "image": [b"x"], "image_path": ["x.png"]}, "found both"),
        ({"id": ["a"], "image": [b"x"], "mask": [b"x"], "boxes": [[[0, 0, 1, 1]]]}, "['mask', 'boxes']"),
        ({"id": [1], "image": [b"x"]}, "column 'id' must be a string, its Arrow type is int64"),
        ({"id": ["a"], "image": ["not bytes"]}, "column 'image' must be binary"),
        ({"id": ["a"], "image_path": [b"x.png"]}, "column 'image_path' must be a string"),
        ({"id": ["a"], "image": [b"x"], "mask_path": [3]}, "column 'mask_path' must be a string"),
        ({"id": ["a"], "image": [b"x"], "mask": ["m.png"]}, "column 'mask' must be binary"),
        ({"id": ["a"], "image": [b"x"], "boxes": [[1, 2, 3, 4]]}, "column 'boxes' must be a list of [x0, y0, x1, y1] "
         "number lists, its Arrow type is list<element: int64>"),
        ({"id": ["a"], "image": [b"x"], "boxes": [[["1", "2", "3", "4"]]]}, "column 'boxes'"),
    ],
)
def test_refuses_wrong_columns_naming_them(tmp_path, columns, expected):
    assert expected in refusal(write_pool(tmp_path / "p.parquet", columns))


def test_refuses_boxes_of_fixed_size_other_than_four(tmp_path):
    boxes = pa.array([[[0, 0, 1]]], type=pa.list_(pa.list_(pa.float32(), 3)))
    path = write_pool(tmp_path / "p.parquet", {"id": ["a"], "image": [b"x"], "boxes": boxes})
    assert "column 'boxes'" in refusal(path)
    ok = pa.array([[[0, 0, 1, 1]]], type=pa.list_(pa.list_(pa.float32(), 4)))
    assert open_pool(write_pool(tmp_path / "q.parquet", {"id": ["a"], "image": [b"x"],
                                                         "boxes": ok})).roi_column == "boxes"


def test_refuses_null_ids_listing_the_rows(tmp_path):
    ids = ["a", None, "c"] + [None] * 7
    message = refusal(write_pool(tmp_path / "p.parquet", {"id": ids, "image": [b"x"] * 10}))
    assert "'id' holds nulls: 8 row(s): row 1; row 3; row 4; row 5; row 6; and 3 more" in message


def test_refuses_duplicate_ids_across_files_with_their_rows(tmp_path):
    write_pool(tmp_path / "p" / "1.parquet", {"id": ["a", "b", "c"], "image": [b"x"] * 3})
    write_pool(tmp_path / "p" / "2.parquet", {"id": ["d", "b", "a", "e"], "image": [b"x"] * 4})
    message = refusal(tmp_path / "p")
    assert "must be unique, 2 value(s) repeat" in message
    assert "'a' at rows 0, 5" in message and "'b' at rows 1, 4" in message


def test_refuses_paths_that_leave_the_folder_or_name_no_file(tmp_path):
    pool = tmp_path / "pool"
    (pool / "images").mkdir(parents=True)
    (pool / "images" / "ok.png").write_bytes(png_grey())
    (tmp_path / "secret.png").write_bytes(png_grey())
    (pool / "images" / "link.png").symlink_to(tmp_path / "secret.png")
    cases = {
        "absolute": str(tmp_path / "secret.png"),
        "dotdot": "../secret.png",
        "inner_dotdot": "images/../images/ok.png",
        "symlink": "images/link.png",
        "missing": "images/missing.png",
        "directory": "images",
    }
    for name, bad in cases.items():
        path = write_pool(pool / "p.parquet", {"id": ["good", name], "image_path": ["images/ok.png", bad]})
        message = refusal(path)
        assert "column 'image_path'" in message and f"row 1 (id '{name}')" in message, message
        assert "row 0" not in message
    path = write_pool(pool / "p.parquet", {"id": ["a"], "image": [png_grey()], "mask_path": ["../secret.png"]})
    assert "column 'mask_path'" in refusal(path)


def test_symlinks_and_dictionary_encoded_strings_inside_the_folder_are_fine(tmp_path):
    pool = tmp_path / "pool"
    (pool / "store").mkdir(parents=True)
    (pool / "store" / "real.png").write_bytes(png_grey(value=30))
    (pool / "link.png").symlink_to(pool / "store" / "real.png")
    ids = pa.array(["a", "b"]).dictionary_encode()
    paths = pa.array(["link.png", "store/real.png"]).dictionary_encode()
    spec = open_pool(write_pool(pool / "p.parquet", {"id": ids, "image_path": paths}))
    decoded = decode_batch(next(spec.iter_batches(2)), DecodeSettings((4, 4)))
    assert decoded.ids == ["a", "b"] and decoded.errors == [None, None]
    assert np.allclose(decoded.images[:, 0, 0, 0], 30 / 255)


def test_paths_are_relative_to_each_files_own_folder(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / "p" / sub / "img").mkdir(parents=True)
        (tmp_path / "p" / sub / "img" / "x.png").write_bytes(png_grey(value=100 if sub == "a" else 200))
        write_pool(tmp_path / "p" / sub / "part.parquet", {"id": [sub], "image_path": ["img/x.png"],
                                                           "mask_path": [None]})
    spec = open_pool(tmp_path / "p")
    decoded = decode_batch(next(spec.iter_batches(2)), DecodeSettings((4, 4)))
    assert decoded.errors == [None, None]
    assert np.allclose(decoded.images[:, 0, 0, 0], [100 / 255, 200 / 255])


def test_all_null_roi_columns_typed_null_are_allowed_and_mix_with_typed_files(tmp_path):
    write_pool(tmp_path / "p" / "1.parquet", {"id": ["a"], "image": [png_grey()], "boxes": [None], "label": [None]})
    write_pool(tmp_path / "p" / "2.parquet", {"id": ["b"], "image": [png_grey()], "boxes": [[[0, 0, 8, 8]]],
                                              "label": ["x"]})
    spec = open_pool(tmp_path / "p")
    assert spec.roi_column == "boxes"
    decoded = decode_batch(next(spec.iter_batches(2, columns=["label"])), DecodeSettings((16, 16)))
    assert list(decoded.has_roi) == [False, True] and decoded.extra["label"] == [None, "x"]


def test_content_problems_are_not_refused_at_open(tmp_path):
    path = write_pool(tmp_path / "p.parquet", {"id": ["a"], "image": [b"garbage"], "boxes": [[[5, 5, 1, 1, 9]]]})
    assert open_pool(path).num_rows == 1


# ---------------------------------------------------------------- iter_batches


@pytest.fixture
def three_files(tmp_path):
    """Rows 0..22 across three files of 7, 9 and 7 rows, written in row groups of 3."""
    start = 0
    for name, n in (("1.parquet", 7), ("2.parquet", 9), ("3.parquet", 7)):
        rows = range(start, start + n)
        write_pool(
            tmp_path / "p" / name,
            {"id": [f"id{r:02d}" for r in rows], "image": [png_grey(value=r) for r in rows],
             "fold": [r % 5 for r in rows]},
            row_group_size=3,
        )
        start += n
    return open_pool(tmp_path / "p")


@pytest.mark.parametrize("batch_size", [1, 4, 5, 7, 23, 50])
def test_batches_have_fixed_boundaries_across_files(three_files, batch_size):
    batches = list(three_files.iter_batches(batch_size, columns=["fold"]))
    assert [b.index for b in batches] == list(range(len(batches)))
    assert len(batches) == three_files.num_batches(batch_size)
    for b in batches:
        assert b.start_row == b.index * batch_size
        expected_rows = list(range(b.start_row, min(b.start_row + batch_size, 23)))
        assert b.ids == [f"id{r:02d}" for r in expected_rows]
        assert b.rows == expected_rows
        assert b.extra["fold"] == [r % 5 for r in expected_rows]
        assert len(b.images) == len(b.rois) == len(b.base_dirs) == len(b)
        assert b.roi_kind is None and b.rois == [None] * len(b)


@pytest.mark.parametrize("batch_size, start_batch", [(4, 1), (4, 3), (5, 2), (3, 5), (7, 3), (4, 6)])
def test_start_batch_gives_the_same_batches_as_reading_from_the_start(three_files, batch_size, start_batch):
    everything = list(three_files.iter_batches(batch_size))
    resumed = list(three_files.iter_batches(batch_size, start_batch=start_batch))
    assert [(b.index, b.start_row, b.ids, b.images) for b in resumed] == [
        (b.index, b.start_row, b.ids, b.images) for b in everything[start_batch:]
    ]


def test_start_batch_past_the_end_yields_nothing(three_files):
    assert list(three_files.iter_batches(5, start_batch=5)) == []


def test_start_batch_skips_whole_row_groups_without_reading_them(three_files, monkeypatch):
    import pyarrow.parquet as pq

    asked = []
    original = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        asked.append(list(kwargs["row_groups"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    # Row 16 is the first row of file 3: files 1 and 2 are not opened for reading at all.
    batch = next(three_files.iter_batches(4, start_batch=4))
    assert batch.ids[0] == "id16"
    assert asked == [[0, 1, 2]]
    asked.clear()
    # Row 12 is in file 2's third row group (rows 3..5 of 9 -> group 1 holds 3..5): groups 0 skipped.
    batch = next(three_files.iter_batches(6, start_batch=2))
    assert batch.ids[0] == "id12"
    assert asked[0] == [1, 2]


def test_iter_batches_refuses_bad_arguments(three_files):
    with pytest.raises(ValueError, match="batch_size"):
        next(three_files.iter_batches(0))
    with pytest.raises(ValueError, match="start_batch"):
        next(three_files.iter_batches(4, start_batch=-1))
    with pytest.raises(PoolError, match=r"columns 'cv_fold' is not a column of the pool"):
        three_files.iter_batches(4, columns=["cv_fold"])


def test_missing_label_column_reads_as_unlabeled(three_files):
    batch = next(three_files.iter_batches(3, columns=["label"]))
    assert batch.extra["label"] == [None, None, None]


def test_raw_batches_pickle_and_carry_plain_values(three_files):
    import pickle

    batch = next(three_files.iter_batches(4))
    assert isinstance(batch, RawBatch)
    assert all(isinstance(v, bytes) for v in batch.images)
    again = pickle.loads(pickle.dumps(batch))
    assert again.ids == batch.ids and again.images == batch.images


def test_memory_stays_bounded_by_the_batch_not_the_pool(tmp_path):
    # 400 rows of 64 KiB of incompressible bytes in a single 26 MB row group, written
    # with small pages; reading 8-row batches must not hold the whole row group
    # (pyarrow's default pre-buffered reader grows the process by about 35 MB here).
    # A fresh process, so that its peak RSS measures this read alone.
    from egal.pool.writer import write_pool_file

    rng = np.random.default_rng(0)
    table = pa.table({"id": [f"r{i}" for i in range(400)], "image": [rng.bytes(64 * 1024) for _ in range(400)]})
    write_pool_file(table, tmp_path / "big.parquet", row_group_rows=400)
    code = (
        "import resource, sys\n"
        "from egal.pool import open_pool\n"
        "spec = open_pool(sys.argv[1])\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "n = sum(len(b) for b in spec.iter_batches(8))\n"
        "print(n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "big.parquet")], capture_output=True, text=True,
                         check=True)
    rows, grown_kib = map(int, out.stdout.split())
    assert rows == 400
    assert grown_kib < 16 * 1024, f"reading grew the process by {grown_kib} KiB for a 26 MB row group"


# ---------------------------------------------------------------- load_pool_arrays


@pytest.fixture
def mixed_pool(tmp_path):
    n = 150
    images = [png_grey(value=i % 256) for i in range(n)]
    images[7] = b"not an image"
    boxes = [[[2, 2, 10, 12]] if i % 3 else None for i in range(n)]
    labels = [None if i % 4 == 0 else f"c{i % 2}" for i in range(n)]
    return write_pool(
        tmp_path / "p.parquet",
        {"id": [f"s{i:03d}" for i in range(n)], "image": images, "boxes": boxes, "label": labels,
         "fold": [i % 5 for i in range(n)]},
    )


def test_load_pool_arrays_in_process_and_with_workers_agree(mixed_pool):
    settings = DecodeSettings((8, 8), 3, mask_size=(4, 4))
    # The row that cannot be decoded is kept (zeros, with its reason) and also warned about.
    with pytest.warns(UndecodedRows,
                      match=r"1 row\(s\) of pool .* row 7 \(id 's007'\): image: cannot identify") as caught:
        serial = load_pool_arrays(mixed_pool, settings, columns=("label", "fold"))
    assert [(row, ident, extra["label"]) for row, ident, _, extra in caught[0].message.failures] == [(7, "s007", "c1")]
    with pytest.warns(UndecodedRows):
        parallel = load_pool_arrays(open_pool(mixed_pool), settings, columns=("label", "fold"), workers=2)
    assert serial["images"].shape == (150, 3, 8, 8) and serial["images"].dtype == np.float32
    assert serial["masks"].shape == (150, 4, 4) and serial["masks"].dtype == np.uint8
    assert list(serial["ids"]) == [f"s{i:03d}" for i in range(150)]
    assert serial["errors"][7].startswith("image: cannot identify image file")
    assert sum(e is not None for e in serial["errors"]) == 1
    assert serial["label"][0] is None and serial["label"][1] == "c1"
    assert list(serial["fold"]) == [i % 5 for i in range(150)]
    assert list(serial["has_roi"]) == [i % 3 != 0 and i != 7 for i in range(150)]
    for key in serial:
        assert np.array_equal(serial[key], parallel[key]), key
