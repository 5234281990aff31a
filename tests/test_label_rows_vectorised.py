"""egal.pool.labels.read_labels (labelled_rows, label_counts) against the rule it applies, is_label and label_key
cell by cell: it applies them once per distinct value of a block of rows, so every kind of cell must come out as
the per-cell rule says, in the same order, and a scoring run reads the label column once."""
import datetime
import decimal
import sys
import uuid
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from egal.pool import open_pool
from egal.pool import spec as spec_module
from egal.pool.encode import encode_png
from egal.pool.labels import _labels_of, is_label, label_counts, label_key, labelled_rows, read_labels
from egal.pool.writer import write_pool_file

PNG = encode_png(np.full((8, 8), 90, np.uint8))


def per_cell(values) -> tuple:
    """(flags, [(class, rows)] in the order of first rows): the rule as labelled_rows and label_counts applied it
    before they were vectorised, cell by cell."""
    counts = Counter(label_key(v) for v in values)
    counts.pop(None, None)
    return [is_label(v) for v in values], list(dict(counts).items())


def assert_as_per_cell(array: pa.Array) -> None:
    values = array.to_pylist()
    flags, found = _labels_of(array)
    expected_flags, expected_found = per_cell(values)
    assert flags.dtype == bool and flags.shape == (len(values),)
    wrong = [(i, values[i]) for i in np.flatnonzero(flags != np.array(expected_flags, dtype=bool))]
    assert not wrong, f"{array.type}: cells judged unlike is_label: {wrong[:10]}"
    assert found == expected_found, array.type


# Every character Python's str.strip() strips, besides ASCII's: what pyarrow's whitespace may not agree with.
ODD_SPACE = ["\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\u00a0", "\u1680", "\u2000", "\u200a", "\u2028", "\u2029",
             "\u202f", "\u205f", "\u3000"]
# Characters that look blank, or were whitespace in some Unicode version, but str.strip() keeps.
NOT_SPACE = ["\u200b", "\u180e", "\ufeff", "\u2060", "\u00ad", "\x00"]
STRINGS = [None, "", " ", "  ", "\t\n\r\x0b\x0c", "nan", "NaN", "None", "NA", "null", "a", " a ", "benign", "0",
           "False", *ODD_SPACE, *NOT_SPACE, *(c + "a" + c for c in ODD_SPACE + NOT_SPACE),
           "".join(ODD_SPACE), "".join(NOT_SPACE), "\u3000\u00a0 \u2028", "\u3000x\u00a0", "é", "腫瘍", "benign"]


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string(), pa.string_view()], ids=str)
def test_text_cells_are_labels_exactly_as_is_label_says(kind):
    assert_as_per_cell(pa.array(STRINGS * 3, type=kind))


def test_every_character_alone_and_around_text_is_judged_as_str_strip_does():
    # Every code point of the Basic Multilingual Plane, where all of Unicode's whitespace is (but the surrogates,
    # which UTF-8 text cannot hold), and one in 97 of the others, alone and around a space. (Each cell is a value
    # of its own, so this compares the flags alone: the classes are the cells' own text.)
    characters = [chr(c) for c in [*range(0x10000), *range(0x10000, sys.maxunicode + 1, 97)]
                  if not 0xD800 <= c <= 0xDFFF]
    for cells in (characters, [c + " " + c for c in characters]):
        flags, _ = _labels_of(pa.array(cells))
        expected = np.fromiter(map(is_label, cells), dtype=bool, count=len(cells))
        assert not [cells[i] for i in np.flatnonzero(flags != expected)]


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary(), pa.binary_view()], ids=str)
def test_bytes_cells_are_labels_exactly_as_is_label_says(kind):
    every_byte = [bytes([b]) for b in range(256)]
    cells = [None, b"", b" ", b" \t\n\r\x0b\x0c", b"\x1c", b"\xa0", b"\x00", b"a", b" a ", b"nan", b"\xff\xfe",
             *every_byte, *(b + b"z" + b for b in every_byte), *(b + b for b in every_byte)]
    assert_as_per_cell(pa.array(cells * 2, type=kind))


def test_fixed_size_bytes_cells_are_labels_exactly_as_is_label_says():
    assert_as_per_cell(pa.array([bytes([b]) for b in range(256)] + [None], type=pa.binary(1)))
    assert_as_per_cell(pa.array([b"  ", b" a", b"\t\n", None, b"  "], type=pa.binary(2)))


@pytest.mark.parametrize("kind", [pa.float16(), pa.float32(), pa.float64()], ids=str)
def test_number_cells_with_nan_and_signed_zeros(kind):
    cells = [None, float("nan"), 0.0, -0.0, 1.0, -1.5, float("inf"), float("-inf"), 0.0, -0.0, float("nan"), 2.0]
    if kind != pa.float16():
        cells += [1e-30, 3.4e38]
    assert_as_per_cell(pa.array(cells, type=kind))
    # NaNs of other bit patterns (a negative NaN, a payload) are no label either
    bits = np.array([0x7FF8000000000000, 0xFFF8000000000000, 0x7FF0000000000001, 0x0000000000000000,
                     0x8000000000000000], dtype=np.uint64)
    assert_as_per_cell(pa.array(bits.view(np.float64)).cast(pa.float64()))


def test_zero_and_minus_zero_are_two_classes_as_str_tells_them():
    flags, found = _labels_of(pa.array([-0.0, 0.0, None, -0.0]))
    assert flags.tolist() == [True, True, False, True] and found == [("-0.0", 2), ("0.0", 1)]


@pytest.mark.parametrize("array", [
    pa.array([None, 0, 1, -1, 0, 2**62, None], type=pa.int64()),
    pa.array([0, 255, None, 0], type=pa.uint8()),
    pa.array([2**64 - 1, 0, None], type=pa.uint64()),
    pa.array([True, False, None, False, True]),
    pa.nulls(5),
    pa.nulls(0, type=pa.string()),
    pa.array([decimal.Decimal("0.00"), None, decimal.Decimal("1.50")], type=pa.decimal128(5, 2)),
    pa.array([datetime.date(2026, 1, 1), None, datetime.date(1970, 1, 1)]),
    pa.array([datetime.datetime(2026, 1, 1, 12), None], type=pa.timestamp("us", tz="UTC")),
    pa.array([[1], [], None, [float("nan")], [1]]),
    pa.array([{"a": 1}, None, {"a": None}]),
    pa.array([uuid.UUID(int=1).bytes, None, uuid.UUID(int=1).bytes], type=pa.uuid()),
    pa.array(["b", None, "a", " ", "b", "nan", ""]).dictionary_encode(),
    pa.DictionaryArray.from_arrays(pa.array([2, 0, None, 2, 1], type=pa.int8()), pa.array(["a", "a", "c", " "])),
    pa.array(STRINGS).slice(7, 20),
], ids=lambda a: str(a.type))
def test_cells_of_every_other_type(array):
    assert_as_per_cell(array)


def _pool(folder, name, labels, label_type=None) -> str:
    ids = [f"{name}_{i:05d}" for i in range(len(labels))]
    table = pa.table({"id": ids, "image": pa.array([PNG] * len(labels), type=pa.binary()),
                      "label": pa.array(labels, type=label_type)})
    return str(write_pool_file(table, folder / f"{name}.parquet", row_group_rows=64))


def test_a_pool_read_in_many_blocks_and_files_counts_as_cell_by_cell(tmp_path, monkeypatch):
    # Classes first seen in later blocks and files come after the earlier ones, as they did cell by cell.
    monkeypatch.setattr(spec_module, "COLUMN_READ_ROWS", 7)
    rng = np.random.default_rng(3)
    choices = np.array([None, None, None, "", " ", "\u3000", "a", "b", "c", "nan", "\u00a0d"], dtype=object)
    (tmp_path / "pool").mkdir()
    for name in ("part0", "part1"):
        _pool(tmp_path / "pool", name, choices[rng.integers(0, len(choices), 150)].tolist() + ["late " + name],
              pa.string())
    spec = open_pool(tmp_path / "pool")
    values = list(spec.column_values("label"))
    flags, found = per_cell(values)
    labels = read_labels(spec)
    assert labels.rows.tolist() == flags and list(labels.counts.items()) == found
    assert labelled_rows(spec).tolist() == flags and list(label_counts(spec).items()) == found
    assert list(labels.counts)[-2:] == ["late part0", "late part1"]


def test_a_pool_without_the_column_has_no_labelled_row(tmp_path):
    spec = open_pool(_pool(tmp_path, "p", ["a", None, "b"]))
    labels = read_labels(spec, "grade")
    assert labels.rows.tolist() == [False] * 3 and labels.counts == {}
    assert labelled_rows(spec, "grade").tolist() == [False] * 3 and label_counts(spec, "grade") == {}


@pytest.mark.parametrize("label_type", [pa.int64(), pa.float64(), pa.bool_(), pa.null()], ids=str)
def test_a_pool_of_other_label_types(tmp_path, label_type):
    labels = {"int64": [0, None, 1, 1, 0], "double": [0.0, float("nan"), None, -0.0, 2.5],
              "bool": [True, None, False, False, True], "null": [None] * 5}[str(label_type)]
    spec = open_pool(_pool(tmp_path, "p", labels, label_type))
    flags, found = per_cell(list(spec.column_values("label")))
    got = read_labels(spec)
    assert got.rows.tolist() == flags and list(got.counts.items()) == found


def test_a_scoring_run_reads_the_label_column_once(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import egal
    from pools import CLASSES, make_rows, save_tiny_model, write_pool

    rows = make_rows(12, folder=tmp_path)
    for i, row in enumerate(rows):
        row["patient"] = f"p{i % 4}"
        if i == 4:
            row["label"] = " \u3000"  # blank: no label
    pool = write_pool(tmp_path / "pool.parquet", rows)
    model = save_tiny_model(tmp_path / "model.pt")
    read = []
    column_arrays = spec_module.PoolSpec.column_arrays

    def counted(self, name):
        read.append(name)
        return column_arrays(self, name)

    monkeypatch.setattr(spec_module.PoolSpec, "column_arrays", counted)
    expected = [is_label(row["label"]) for row in rows]
    assert set(r["label"] for r in rows) - {None, " \u3000"} <= set(CLASSES)
    for options in ({}, {"select": 3, "group_column": "patient", "per_group": 1},
                    {"select": 3, "group_column": "patient", "per_group": 1, "include_labelled": True}):
        read.clear()
        result = egal.score_pool(pool, model, out=tmp_path / "s.parquet", workers=0, progress=False, overwrite=True,
                                 runtime="torch", **options)
        assert read.count("label") == 1, options
        assert result.table.column("labelled").to_pylist() == expected and result.warnings == ()
    # A finished run resumed writes nothing: its labels are read for the warnings alone, once.
    read.clear()
    result = egal.score_pool(pool, model, out=tmp_path / "s.parquet", workers=0, progress=False, resume=True,
                             runtime="torch", select=3, group_column="patient", per_group=1, include_labelled=True)
    assert result.already_complete and read.count("label") == 1
