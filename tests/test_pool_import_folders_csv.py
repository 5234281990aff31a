"""egal.importers: the folders layout, CSV tables, the streaming writer and the skip ledger."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from egal.importers import SourceError, from_csv, from_folders
from egal.importers.writer import StreamingPoolWriter, pool_schema
from egal.pool import DecodeSettings, load_pool_arrays, open_pool
from egal.pool.encode import encode_png
from pool_import_sources import folder_image, write_csv


def rows_by_id(path):
    return {r["id"]: r for r in pq.read_table(path).to_pylist()}


@pytest.fixture
def layout(tmp_path):
    src = tmp_path / "src"
    folder_image(src / "glioma" / "a.png", 10, mask_box=(2, 3, 10, 12))
    folder_image(src / "glioma" / "nested" / "b.png", 20, mask_box=(0, 0, 5, 5))
    folder_image(src / "meningioma" / "c.png", 30)  # no mask: kept without ROI
    folder_image(src / "unlabeled" / "d.png", 40, mask_box=(4, 4, 8, 8))
    folder_image(src / "loose.png", 50)  # not in a class folder
    (src / "meningioma" / "broken.png").write_bytes(b"not a png")
    folder_image(src / "meningioma" / "e.png", 60)
    (src / "meningioma" / "e_mask.png").write_bytes(encode_png(np.zeros((10, 40), np.uint8)))  # wrong aspect
    (src / "glioma" / "orphan_mask.png").write_bytes(encode_png(np.zeros((4, 4), np.uint8)))
    return src


def test_folders_rows_labels_masks_and_skips(layout, tmp_path):
    result = from_folders(layout, tmp_path / "pool.parquet", progress=False)
    rows = rows_by_id(result.out)
    assert set(rows) == {"a", "b", "c", "d"}
    assert {k: rows[k]["label"] for k in rows} == {"a": "glioma", "b": "glioma", "c": "meningioma", "d": None}
    assert rows["a"]["image"] == (layout / "glioma" / "a.png").read_bytes()
    assert rows["a"]["mask"] == (layout / "glioma" / "a_mask.png").read_bytes()
    assert rows["c"]["mask"] is None and rows["b"]["source_path"] == "glioma/nested/b.png"
    assert result.rows == 4 and result.rows_with_roi == 3
    assert result.labels == {"glioma": 2, "meningioma": 1, None: 1}
    skipped = result.skipped.skipped
    assert skipped["image not in a class folder"] == 1
    assert skipped["unreadable image"] == 1
    assert skipped["mask unreadable or not of its image's shape"] == 1
    assert skipped["mask without its image"] == 1
    assert result.skipped.noted["image without mask (kept, no ROI)"] == 1
    assert "loose.png" in result.skipped.examples["image not in a class folder"][0]
    assert "Skipped:" in result.summary()


def test_folders_follows_a_linked_class_folder_once_and_never_loops(tmp_path):
    elsewhere = tmp_path / "elsewhere" / "pituitary"
    folder_image(elsewhere / "p.png", 70, mask_box=(1, 1, 4, 4))
    src = tmp_path / "src"
    folder_image(src / "glioma" / "a.png", 10)
    (src / "pituitary").symlink_to(elsewhere, target_is_directory=True)  # a class kept on another disk, say
    (src / "glioma" / "again").symlink_to(src, target_is_directory=True)  # a loop back to the top
    folder_image(src / "meningioma" / "sub" / "m.png", 20)
    (src / "glioma" / "shortcut").symlink_to(src / "meningioma" / "sub", target_is_directory=True)
    rows = rows_by_id(from_folders(src, tmp_path / "pool.parquet", progress=False).out)
    assert {k: rows[k]["label"] for k in rows} == {"a": "glioma", "m": "meningioma", "p": "pituitary"}
    with pytest.raises(SourceError, match="leads through a symbolic link to .*use images_as='bytes'"):
        from_folders(src, src / "paths.parquet", images_as="paths", progress=False)


def test_folders_mask_lands_on_its_pixels(layout, tmp_path):
    out = from_folders(layout, tmp_path / "pool.parquet", progress=False).out
    arrays = load_pool_arrays(out, DecodeSettings(input_size=(48, 64)))
    a = list(arrays["ids"]).index("a")
    expected = np.zeros((48, 64), np.uint8)
    expected[6:24, 4:20] = 1  # (2, 3, 10, 12) at twice the size
    assert np.array_equal(arrays["masks"][a], expected)


def test_folders_paths_mode_references_files_in_place(layout):
    result = from_folders(layout, layout / "pool.parquet", images_as="paths", progress=False)
    rows = rows_by_id(result.out)
    assert rows["b"]["image_path"] == "glioma/nested/b.png" and rows["b"]["mask_path"] == "glioma/nested/b_mask.png"
    assert open_pool(result.out).image_column == "image_path"


def test_folders_paths_mode_needs_the_pool_inside_the_folder(layout, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(SourceError, match="write --out into the dataset folder"):
        from_folders(layout, elsewhere / "pool.parquet", images_as="paths", progress=False)
    assert os.listdir(elsewhere) == []  # neither the pool nor its temporary file


def test_folders_parallel_masks_folder_and_ids_by_path(tmp_path):
    folder_image(tmp_path / "img" / "x" / "same.png", 10)
    folder_image(tmp_path / "img" / "y" / "same.png", 20)
    (tmp_path / "masks" / "x").mkdir(parents=True)
    (tmp_path / "masks" / "x" / "same.png").write_bytes(encode_png(np.full((24, 32), 255, np.uint8)))
    by_name = from_folders(tmp_path / "img", tmp_path / "a.parquet", masks=str(tmp_path / "masks"), progress=False)
    assert by_name.rows == 1 and by_name.skipped.skipped["id used twice (the first row kept)"] == 1
    by_path = from_folders(tmp_path / "img", tmp_path / "b.parquet", masks=str(tmp_path / "masks"), ids="path",
                           progress=False)
    rows = rows_by_id(by_path.out)
    assert set(rows) == {"x/same", "y/same"} and rows["x/same"]["mask"] is not None and rows["y/same"]["mask"] is None


def test_folders_passes_over_a_fifo_named_like_an_image(tmp_path):
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "x.png").write_bytes(encode_png(np.zeros((8, 8), np.uint8)))
    os.mkfifo(tmp_path / "src" / "a" / "pipe.png")  # reading it would wait for a writer forever
    result = from_folders(tmp_path / "src", tmp_path / "p.parquet", progress=False)
    assert result.rows == 1


def test_folders_skips_what_egal_score_could_not_decode_and_names_it_cannot_store(tmp_path):
    src = tmp_path / "src"
    folder_image(src / "c1" / "ok.png", 10)
    whole = (src / "c1" / "ok.png").read_bytes()
    (src / "c1" / "cut.png").write_bytes(whole[:60])  # the header reads; the pixels do not
    os.mkfifo(src / "c1" / "pipe.png")
    (src / "c1" / "twice.png").write_bytes(whole)
    (src / "c1" / "twice.PNG").write_bytes(whole)  # the same id: skipped, and its note not counted
    folder_image(src / "c1" / "photo.jpg", 20)
    (src / "c1" / "photo_mask.jpg").write_bytes(encode_png(np.zeros((24, 32), np.uint8)))  # a mask must be PNG
    os.makedirs(os.fsencode(src / "c1") + b"/caf\xe9")  # Latin-1 names: Parquet holds UTF-8 only
    os.link(src / "c1" / "ok.png", os.fsencode(src / "c1") + b"/caf\xe9/x.png")
    os.link(src / "c1" / "ok.png", os.fsencode(src / "c1") + b"/\xe9t\xe9.png")
    result = from_folders(src, tmp_path / "pool.parquet", progress=False)
    assert sorted(rows_by_id(result.out)) == ["ok", "photo", "twice"]
    skipped = result.skipped
    assert skipped.skipped == {"unreadable image": 2, "id used twice (the first row kept)": 1,
                               "mask not a PNG (a mask must be lossless: PNG only)": 1,
                               "a file or folder name that is not UTF-8 text (rename it)": 2}
    assert any("truncated" in e for e in skipped.examples["unreadable image"])
    assert any("not a regular file" in e for e in skipped.examples["unreadable image"])
    assert skipped.noted == {"image without mask (kept, no ROI)": 3}  # the rows written, not the ones skipped
    assert "\\udce9" in result.summary() and result.summary().encode()  # shown escaped, printable


def test_folders_refuses_an_existing_out_and_an_empty_source(layout, tmp_path):
    out = tmp_path / "pool.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["an earlier pool"], "image": [b"..."]}), out)
    before = out.read_bytes()
    with pytest.raises(SourceError, match="overwrite=True"):
        from_folders(layout, out, progress=False)
    assert out.read_bytes() == before
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no image"):
        from_folders(tmp_path / "empty", tmp_path / "x.parquet", progress=False)
    from_folders(layout, out, overwrite=True, progress=False)
    assert open_pool(out).num_rows == 4


def test_an_option_error_names_the_option(layout, tmp_path):
    with pytest.raises(ValueError, match="^ids must be one of name, path"):
        from_folders(layout, tmp_path / "p.parquet", ids="stem")


# --- CSV --------------------------------------------------------------------------------------

@pytest.fixture
def images(tmp_path):
    for name, value in (("p1", 10), ("p2", 20), ("p3", 30)):
        (tmp_path / "img").mkdir(exist_ok=True)
        (tmp_path / "img" / f"{name}.png").write_bytes(encode_png(np.full((40, 50), value, np.uint8)))
    return tmp_path


def test_csv_one_box_per_row_grouped_by_id(images):
    table = write_csv(images / "boxes.csv", ["image_id", "path", "finding", "patient", "x_min", "y_min", "x_max",
                                             "y_max"], [
        ["p1", "img/p1.png", "nodule", "pt1", "5", "6", "15", "16"],
        ["p1", "img/p1.png", "nodule", "pt1", "20", "10", "30", "20"],
        ["p2", "img/p2.png", "normal", "pt1", "", "", "", ""],
        ["p3", "img/p3.png", "nodule", "pt2", "40", "30", "60", "45"],  # outside the 50 x 40 image
        ["p4", "img/missing.png", "nodule", "pt3", "1", "1", "2", "2"],
        ["p5", "img/p1.png", "nodule", "pt4", "55", "41", "70", "50"],  # wholly outside
        ["p6", "img/p1.png", "nodule", "pt4", "60", "0", "70", "10"],  # wholly outside, beside one inside
        ["p6", "img/p1.png", "nodule", "pt4", "1", "1", "9", "9"],
    ])
    result = from_csv(table, images / "pool.parquet", id="image_id", image="path", label="finding", group="patient",
                      box_columns="x_min,y_min,x_max,y_max", progress=False)
    rows = rows_by_id(result.out)
    assert rows["p1"]["boxes"] == [[5, 6, 15, 16], [20, 10, 30, 20]] and rows["p1"]["group"] == "pt1"
    assert rows["p2"]["boxes"] == [] and rows["p2"]["label"] == "normal"
    assert set(rows) == {"p1", "p2"}
    assert result.skipped.skipped == {"box unreadable or outside its image": 3, "image file missing or unreadable": 1}
    clipped = from_csv(table, images / "clipped.parquet", id="image_id", image="path", label="finding",
                       box_columns="x_min,y_min,x_max,y_max", out_of_image="clip", progress=False)
    assert rows_by_id(clipped.out)["p3"]["boxes"] == [[40, 30, 50, 40]]
    assert clipped.skipped.noted["box clipped to its image"] == 1
    # A box wholly outside is dropped, not clipped; a row left with none has no ROI, and says so.
    assert rows_by_id(clipped.out)["p5"]["boxes"] == [] and rows_by_id(clipped.out)["p6"]["boxes"] == [[1, 1, 9, 9]]
    assert clipped.skipped.noted["every box outside its image: row kept without an ROI"] == 1
    assert clipped.skipped.noted["box wholly outside its image dropped"] == 1


def test_csv_boxes_column_json_and_dicts_and_masks(images):
    mask = np.zeros((40, 50), bool)
    mask[10:20, 10:30] = True
    (images / "img" / "p1_mask.png").write_bytes(encode_png(mask.astype(np.uint8) * 255))
    table = write_csv(images / "t.csv", ["file", "roi", "mask"], [
        ["img/p1.png", json.dumps([[1, 2, 11, 12]]), "img/p1_mask.png"],
        ["img/p2.png", "[{'x': 5, 'y': 6, 'width': 10, 'height': 4}]", ""],
        ["img/p3.png", "", ""],
    ])
    boxes = rows_by_id(from_csv(table, images / "b.parquet", image="file", boxes="roi", progress=False).out)
    assert boxes["img/p1"]["boxes"] == [[1, 2, 11, 12]] and boxes["img/p2"]["boxes"] == [[5, 6, 15, 10]]
    assert boxes["img/p3"]["boxes"] == [] and boxes["img/p1"]["label"] is None
    masks = from_csv(table, images / "m.parquet", image="file", mask="mask", progress=False)
    assert masks.rows_with_roi == 1
    assert rows_by_id(masks.out)["img/p1"]["mask"] == (images / "img" / "p1_mask.png").read_bytes()


def test_csv_rows_without_an_image_path_are_skipped_when_ids_come_from_paths(images):
    table = write_csv(images / "blank.csv", ["image", "label"], [["img/p1.png", "a"], ["", "b"], [".", "c"],
                                                                 ["", "d"]])
    result = from_csv(table, images / "pool.parquet", image="image", label="label", progress=False)
    assert set(rows_by_id(result.out)) == {"img/p1"}
    assert result.skipped.skipped == {"no image path": 3}


def test_csv_refusals(images):
    table = write_csv(images / "t.csv", ["file"], [["img/p1.png"]])
    with pytest.raises(SourceError, match=r"lacks column\(s\) \['label'\]"):
        from_csv(table, images / "x.parquet", image="file", label="label", progress=False)
    with pytest.raises(ValueError, match="boxes cannot be combined with mask"):
        from_csv(table, images / "x.parquet", image="file", mask="m", boxes="b")
    repeated = write_csv(images / "r.csv", ["file", "label"], [["img/p1.png", "a"], ["img/p1.png", "b"]])
    with pytest.raises(SourceError, match="no row of table .* could be imported"):
        from_csv(repeated, images / "x.parquet", image="file", label="label", progress=False)
    assert not (images / "x.parquet").exists()


def test_csv_cells_that_mark_no_value_repeated_lines_and_repeated_columns(images):
    table = write_csv(images / "t.csv", ["file", "label", "site"], [
        ["img/p1.png", "NaN", "NA"], ["img/p2.png", "null", "s1"], ["img/p3.png", " n/a ", "None"],
        ["img/p3.png", " n/a ", "None"],  # the same line again: one row, noted
    ])
    result = from_csv(table, images / "pool.parquet", image="file", label="label", group="site", progress=False)
    rows = rows_by_id(result.out)
    assert {k: (r["label"], r["group"]) for k, r in rows.items()} == {
        "img/p1": (None, None), "img/p2": (None, "s1"), "img/p3": (None, None)}
    assert result.labels == {None: 3} and result.skipped.noted == {"line repeated exactly (the repeat ignored)": 1}
    twice = write_csv(images / "twice.csv", ["file", "label", "label"], [["img/p1.png", "a", "b"]])
    with pytest.raises(SourceError, match=r"names column\(s\) \['label'\] twice"):
        from_csv(twice, images / "x.parquet", image="file", label="label", progress=False)


def test_csv_skips_undecodable_images_and_never_waits_on_a_fifo(images):
    import signal

    whole = (images / "img" / "p1.png").read_bytes()
    (images / "img" / "cut.png").write_bytes(whole[:60])
    os.mkfifo(images / "img" / "pipe.png")
    table = write_csv(images / "t.csv", ["file", "mask"], [["img/p1.png", ""], ["img/cut.png", ""],
                                                           ["img/pipe.png", ""], ["img/p2.png", "img/pipe.png"]])
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the import waited on a FIFO"))
    signal.alarm(30)
    try:
        result = from_csv(table, images / "pool.parquet", image="file", mask="mask", progress=False)
    finally:
        signal.alarm(0)
    assert sorted(rows_by_id(result.out)) == ["img/p1"]
    assert result.skipped.skipped == {"unreadable image": 2, "mask unreadable or not of its image's shape": 1}


def test_csv_missing_value_cells_of_masks_and_boxes_hold_nothing_and_repeats_add_no_box(images, monkeypatch):
    table = write_csv(images / "m.csv", ["file", "mask"], [["img/p1.png", "NA"], ["img/p2.png", ""]])
    result = from_csv(table, images / "m.parquet", image="file", mask="mask", progress=False)
    assert sorted(rows_by_id(result.out)) == ["img/p1", "img/p2"] and result.rows_with_roi == 0  # NA: no mask file
    boxes = write_csv(images / "b.csv", ["id", "file", "label", "x0", "y0", "x1", "y1"], [
        ["a", "img/p1.png", "x", "1", "1", "5", "5"], ["a", "img/p1.png", "x", "NA", "NA", "NA", "NA"],
        ["b", "img/p2.png", "", "2", "2", "6", "6"], ["b", "img/p2.png", "null", "3", "3", "7", "7"],
        ["a", "img/p1.png", "x", "1", "1", "5", "5"], ["b", "img/p2.png", "", "2", "2", "6", "6"],  # the table again
    ])
    result = from_csv(boxes, images / "b.parquet", id="id", image="file", label="label", box_columns="x0,y0,x1,y1",
                      progress=False)
    rows = rows_by_id(result.out)
    # NA box cells add no box; a line repeated exactly is read once (its box was stored twice); "" and "null"
    # labels of one id do not disagree (both hold no label)
    assert rows["a"]["boxes"] == [[1, 1, 5, 5]] and rows["a"]["label"] == "x"
    assert rows["b"]["boxes"] == [[2, 2, 6, 6], [3, 3, 7, 7]] and rows["b"]["label"] is None
    assert result.skipped.noted == {"line repeated exactly (the repeat ignored)": 2}
    # A decoder's own error (pydicom on a damaged element) is one skipped row, as egal score has it: it was a
    # traceback that stopped the whole import.
    import egal.importers.imaging as imaging

    real = imaging.read_image
    monkeypatch.setattr(imaging, "read_image", lambda data, c: (_ for _ in ()).throw(ValueError("bad 'x'"))
                        if data == (images / "img" / "p2.png").read_bytes() else real(data, c))
    plain = write_csv(images / "p.csv", ["file"], [["img/p1.png"], ["img/p2.png"]])
    result = from_csv(plain, images / "p.parquet", image="file", progress=False)
    assert sorted(rows_by_id(result.out)) == ["img/p1"]
    assert "pixels cannot be decoded: ValueError: bad 'x'" in result.skipped.examples["unreadable image"][0]
    # Memory that the machine cannot give is this row's, as egal score has it: counted, named, no traceback.
    monkeypatch.setattr(imaging, "read_image", lambda data, c: (_ for _ in ()).throw(MemoryError("275 MiB"))
                        if data == (images / "img" / "p2.png").read_bytes() else real(data, c))
    result = from_csv(plain, images / "p.parquet", image="file", progress=False, overwrite=True)
    assert "not enough memory to decode it (275 MiB)" in result.skipped.examples["unreadable image"][0]


def test_overwrite_never_replaces_a_fifo_and_a_foreign_file_is_named_before_overwrite_is_asked(layout, tmp_path):
    fifo = tmp_path / "ff.parquet"
    os.mkfifo(fifo)
    with pytest.raises(SourceError, match="is not an egal pool"):
        from_folders(layout, fifo, overwrite=True, progress=False)
    assert fifo.is_fifo()
    (tmp_path / "notes.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(SourceError, match="is not an egal pool.*never replaced"):  # not "pass --overwrite" first
        from_folders(layout, tmp_path / "notes.parquet", progress=False)


# --- the writer -------------------------------------------------------------------------------

def test_the_writer_flushes_row_groups_and_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "pool.parquet"
    schema = pool_schema("bytes", None)
    image = encode_png(np.zeros((4, 4), np.uint8))
    with StreamingPoolWriter(out, schema, flush_rows=10) as writer:
        for i in range(25):
            writer.add({"id": f"r{i}", "image": image, "label": None, "group": None})
    assert pq.ParquetFile(out).metadata.num_row_groups == 3 and open_pool(out).num_rows == 25
    before = out.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with StreamingPoolWriter(out, schema, overwrite=True, flush_rows=10) as writer:
            for i in range(15):
                writer.add({"id": f"s{i}", "image": image, "label": None, "group": None})
            raise KeyboardInterrupt
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["pool.parquet"]


def test_the_writer_flushes_by_bytes(tmp_path):
    schema = pool_schema("bytes", None)
    big = b"\x89PNG" + bytes(1000)
    with StreamingPoolWriter(tmp_path / "p.parquet", schema, flush_rows=1000, flush_bytes=2500) as writer:
        for i in range(7):
            writer.add({"id": f"r{i}", "image": big, "label": None, "group": None})
    assert pq.ParquetFile(tmp_path / "p.parquet").metadata.num_row_groups == 3


def test_ctrl_c_during_an_import_leaves_no_file(layout, tmp_path, monkeypatch):
    import egal.importers.folders as folders

    calls = []

    def interrupted(data):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(data)

    real = folders.checked_header
    monkeypatch.setattr(folders, "checked_header", interrupted)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(KeyboardInterrupt):
        from_folders(layout, out_dir / "pool.parquet", progress=False)
    assert os.listdir(out_dir) == []
