"""The annotator round trip: export_selection (folders, Label Studio, CVAT), add_labels, pool_info, and the
folders layout written from the real figshare brain-tumour pool imported back unchanged."""
from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from egal.importers import SourceError, add_labels, export_selection, from_folders, pool_info
from egal.pool.encode import encode_dicom, encode_png
from egal.pool.rois import mask_from_boxes, read_mask_png
from pool_import_sources import write_csv

FIGSHARE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "figshare_brain_tumor.parquet"
ROUND_TRIP_ROWS = 300


def blob_mask(h, w, box):
    mask = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    return mask


@pytest.fixture
def mask_pool(tmp_path):
    rows = []
    for i in range(6):
        rows.append({"id": f"s{i}", "image": encode_png(np.full((30, 40), 20 * i, np.uint8)),
                     "mask": encode_png(blob_mask(15, 20, (2 + i, 3, 9 + i, 11))) if i != 4 else None,
                     "label": ["glioma", "meningioma", None][i % 3], "group": f"pt{i // 2}"})
    rows[5]["image"] = encode_png((np.arange(30 * 40).reshape(30, 40) * 50).astype(np.uint16))  # 16-bit
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture
def box_pool(tmp_path):
    rows = [{"id": "d0", "image": encode_dicom((np.arange(50 * 60).reshape(50, 60) % 4000).astype(np.uint16),
                                               bits_stored=12, photometric="MONOCHROME1"),
             "boxes": [[6.0, 5.0, 30.0, 25.5], [40.0, 10.0, 60.0, 50.0]], "label": None},
            {"id": "d1", "image": encode_png(np.zeros((50, 60), np.uint8)), "boxes": [], "label": "normal"}]
    path = tmp_path / "boxes.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def selection(tmp_path, ids):
    return write_csv(tmp_path / "scores.selection.csv", ["rank", "id", "score", "entropy_norm", "misalignment", "pred"],
                     [[k + 1, i, f"{0.9 - k / 10:.6f}", "0.5", "0.7", "glioma"] for k, i in enumerate(ids)])


def test_folders_export_imports_back(mask_pool, tmp_path):
    result = export_selection(mask_pool, tmp_path / "out", progress=False)
    assert result.images == 6
    assert (tmp_path / "out" / "unlabeled" / "s2.png").is_file() and not (tmp_path / "out" / "s4_mask.png").exists()
    back = from_folders(tmp_path / "out", tmp_path / "back.parquet", progress=False).out
    original = {r["id"]: r for r in pq.read_table(mask_pool).to_pylist()}
    for row in pq.read_table(back).to_pylist():
        before = original[row["id"]]
        assert (row["image"], row["mask"], row["label"]) == (before["image"], before["mask"], before["label"])


def test_a_selection_exports_its_rows_in_rank_order(mask_pool, tmp_path):
    chosen = selection(tmp_path, ["s3", "s0"])
    export_selection(mask_pool, tmp_path / "out", selection=str(chosen), progress=False)
    with open(tmp_path / "out" / "selection.csv") as f:
        listed = list(csv.DictReader(f))
    assert [r["id"] for r in listed] == ["s3", "s0"] and listed[0]["file"] == "glioma/s3.png"
    assert listed[1]["rank"] == "2" and listed[0]["score"] == "0.900000"
    bad = write_csv(tmp_path / "bad.csv", ["id"], [["s0"], ["nope"]])
    with pytest.raises(SourceError, match=r"1 id\(s\) of the selection are not in the pool"):
        export_selection(mask_pool, tmp_path / "out2", selection=str(bad), progress=False)
    assert not (tmp_path / "out2").exists()
    with pytest.raises(SourceError, match="overwrite=True"):
        export_selection(mask_pool, tmp_path / "out", progress=False)


def test_overwrite_replaces_an_earlier_export_and_nothing_else(mask_pool, tmp_path, monkeypatch):
    export_selection(mask_pool, tmp_path / "out", progress=False)
    export_selection(mask_pool, tmp_path / "out", overwrite=True, progress=False)  # an earlier export: replaced
    own = tmp_path / "mine"
    own.mkdir()
    (own / "notes.txt").write_text("the user's")
    with pytest.raises(SourceError, match="holds files that egal did not export"):
        export_selection(mask_pool, own, overwrite=True, progress=False)
    assert (own / "notes.txt").read_text() == "the user's"
    monkeypatch.chdir(own)
    for where in (".", "", str(tmp_path), str(mask_pool.parent)):  # the working folder, above it, the pool's
        with pytest.raises(SourceError, match="empty|working folder"):
            export_selection(mask_pool, where, overwrite=True, progress=False)
    assert (own / "notes.txt").is_file() and mask_pool.is_file()
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(SourceError, match="is a file, not a folder"):
        export_selection(mask_pool, tmp_path / "a-file", overwrite=True, progress=False)
    (tmp_path / "link").symlink_to(tmp_path / "out")
    with pytest.raises(SourceError, match="is a symbolic link: name the folder itself"):
        export_selection(mask_pool, tmp_path / "link", overwrite=True, progress=False)
    assert (tmp_path / "out").is_dir()


def test_overwrite_keeps_an_export_that_files_were_added_to_or_edited_in(mask_pool, tmp_path):
    """Before, the mark alone let --overwrite delete the folder: an annotator's CSV saved into the export, or
    an edited file of it, went with it."""
    out = tmp_path / "out"
    export_selection(mask_pool, out, progress=False)
    exported = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    (out / "notes").mkdir()
    (out / "notes" / "radiologist.txt").write_text("s3: look again")
    with pytest.raises(SourceError, match=r"1 file\(s\) added or changed since \('notes/radiologist.txt'\)"):
        export_selection(mask_pool, out, overwrite=True, progress=False)
    assert (out / "notes" / "radiologist.txt").read_text() == "s3: look again"
    (out / "notes" / "radiologist.txt").unlink()
    edited = next(p for p in out.rglob("*.png"))
    edited.write_bytes(edited.read_bytes() + b"edited")
    with pytest.raises(SourceError, match=rf"'{edited.relative_to(out).as_posix()}'"):
        export_selection(mask_pool, out, overwrite=True, progress=False)
    edited.write_bytes(edited.read_bytes()[:-len(b"edited")])  # back as exported: replaced again
    export_selection(mask_pool, out, overwrite=True, progress=False)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == exported
    mark = out / ".egal-export.json"
    mark.write_text(json.dumps({k: v for k, v in json.loads(mark.read_text()).items() if k != "files"}))
    with pytest.raises(SourceError, match="an export by an older egal, which did not list the files"):
        export_selection(mask_pool, out, overwrite=True, progress=False)
    assert out.is_dir()


def test_ids_whose_files_would_collide_are_refused_not_overwritten(tmp_path):
    image = encode_png(np.full((30, 40), 60, np.uint8))
    rows = [{"id": "x", "image": image, "mask": encode_png(blob_mask(30, 40, (2, 3, 9, 11))), "label": "glioma"},
            {"id": "x_mask", "image": image, "mask": None, "label": "glioma"}]
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(rows), pool)
    with pytest.raises(SourceError, match=r"ids 'x' and 'x_mask' would both write 'glioma/x_mask.png'"):
        export_selection(pool, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def rle_pack_decode(rle):
    """thi.ng rle-pack's decode (Label Studio's brush format), written from its published source."""
    bits = "".join(format(b, "08b") for b in rle)
    pos = 0

    def read(n):
        nonlocal pos
        value = int(bits[pos:pos + n], 2)
        pos += n
        return value

    num, word = read(32), read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out, i = np.zeros(num, np.uint8), 0
    while i < num:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if repeat:
            out[i:j] = read(word)
        else:
            for k in range(i, j):
                out[k] = read(word)
        i = j
    return out


def test_label_studio_tasks_hold_the_roi_as_predictions(mask_pool, box_pool, tmp_path):
    export_selection(mask_pool, tmp_path / "ls", to="label-studio", selection=str(selection(tmp_path, ["s1", "s5"])),
                     progress=False)
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert [t["data"]["egal_id"] for t in tasks] == ["s1", "s5"]
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=images/s1.png" and tasks[0]["data"]["egal_rank"] == "1"
    from egal.importers.selection_export import image_url

    assert image_url("/data/local-files/?d=", "images/scan#1 a&b=c é.png") == \
        "/data/local-files/?d=images/scan%231%20a%26b%3Dc%20%C3%A9.png"
    result = tasks[0]["predictions"][0]["result"][0]
    assert result["type"] == "brushlabels" and (result["original_width"], result["original_height"]) == (40, 30)
    rgba = rle_pack_decode(result["value"]["rle"]).reshape(30, 40, 4)
    pool = {r["id"]: r for r in pq.read_table(mask_pool).to_pylist()}
    expected = np.repeat(np.repeat(read_mask_png(pool["s1"]["mask"]), 2, axis=0), 2, axis=1)  # 20 x 15 -> 40 x 30
    assert np.array_equal(rgba[..., 3] > 0, expected) and np.array_equal(rgba[..., 0], rgba[..., 3])
    assert (tmp_path / "ls" / "images" / "s5.png").read_bytes()[:4] == b"\x89PNG"  # 16-bit -> 8-bit PNG
    config = ElementTree.fromstring((tmp_path / "ls" / "label_config.xml").read_text())
    assert [c.get("value") for c in config.iter("Choice")] == ["glioma", "meningioma"]
    assert config.find("BrushLabels").get("name") == result["from_name"]

    export_selection(box_pool, tmp_path / "lsb", to="label-studio", progress=False)
    task = json.loads((tmp_path / "lsb" / "tasks.json").read_text())[0]
    box = task["predictions"][0]["result"][0]
    assert box["type"] == "rectanglelabels" and box["value"]["rectanglelabels"] == ["ROI"]
    assert box["value"]["x"] == pytest.approx(100 * 6 / 60) and box["value"]["height"] == pytest.approx(100 * 20.5 / 50)
    assert "predictions" not in json.loads((tmp_path / "lsb" / "tasks.json").read_text())[1]  # empty ROI


def cvat_mask(element, height, width):
    """A CVAT 1.1 <mask>: run lengths over its box, row-major, background first."""
    left, top, w, h = (int(element.get(k)) for k in ("left", "top", "width", "height"))
    runs = [int(v) for v in element.get("rle").split(",")]
    flat = np.concatenate([np.full(n, k % 2, np.uint8) for k, n in enumerate(runs)])
    mask = np.zeros((height, width), np.uint8)
    mask[top:top + h, left:left + w] = flat.reshape(h, w)
    return mask


def test_cvat_xml_holds_boxes_masks_and_tags(mask_pool, box_pool, tmp_path):
    export_selection(mask_pool, tmp_path / "cv", to="cvat", progress=False)
    root = ElementTree.parse(tmp_path / "cv" / "annotations.xml").getroot()
    assert root.findtext("version") == "1.1" and root.findtext("meta/task/size") == "6"
    assert [label.findtext("name") for label in root.iter("label")] == ["ROI", "glioma", "meningioma"]
    images = {i.get("name"): i for i in root.iter("image")}
    s1 = images["s1.png"]
    assert (s1.get("width"), s1.get("height")) == ("40", "30") and s1.find("tag").get("label") == "meningioma"
    pool = {r["id"]: r for r in pq.read_table(mask_pool).to_pylist()}
    expected = np.repeat(np.repeat(read_mask_png(pool["s1"]["mask"]), 2, axis=0), 2, axis=1)
    assert np.array_equal(cvat_mask(s1.find("mask"), 30, 40), expected)
    assert images["s4.png"].find("mask") is None

    export_selection(box_pool, tmp_path / "cvb", to="cvat", progress=False)
    image = ElementTree.parse(tmp_path / "cvb" / "annotations.xml").getroot().find("image")
    boxes = [[float(b.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")] for b in image.iter("box")]
    assert boxes == [[6.0, 5.0, 30.0, 25.5], [40.0, 10.0, 60.0, 50.0]] and image.find("tag") is None


def test_cvat_tags_come_back_as_labels(mask_pool, tmp_path):
    # The annotators' CVAT export ("CVAT for images 1.1", the layout egal wrote): each image's tag is its label,
    # its id from its file name, ids that are paths included; an image without a tag was left unlabelled.
    table = pq.read_table(mask_pool)
    ids = ["s0", "dir/s1", "s2", "s3", "s4", ".s5"]
    pool = tmp_path / "paths.parquet"
    pq.write_table(table.set_column(0, "id", pa.array(ids)), pool)
    export_selection(pool, tmp_path / "cv", to="cvat", progress=False)
    tree = ElementTree.parse(tmp_path / "cv" / "annotations.xml")
    images = {i.get("name"): i for i in tree.getroot().iter("image")}
    assert sorted(images) == ["%2Es5.png", "dir%2Fs1.png", "s0.png", "s2.png", "s3.png", "s4.png"]
    for name, label in (("s2.png", "glioma"), ("%2Es5.png", "meningioma")):  # the two unlabelled rows, tagged
        ElementTree.SubElement(images[name], "tag", {"label": label, "source": "manual"})
    tree.write(tmp_path / "annotations.xml", encoding="utf-8", xml_declaration=True)
    result = add_labels(pool, tmp_path / "annotations.xml", tmp_path / "r2.parquet")
    assert (result.newly_labelled, result.unchanged, result.relabelled) == (2, 4, [])
    back = pq.read_table(tmp_path / "r2.parquet").to_pydict()
    assert back["id"] == ids and back["label"] == ["glioma", "meningioma", "glioma", "glioma", "meningioma",
                                                   "meningioma"]
    # Two different tags on one image: refused, naming it; a file that is not CVAT's: named.
    ElementTree.SubElement(images["s0.png"], "tag", {"label": "meningioma"})
    tree.write(tmp_path / "two.xml")
    with pytest.raises(SourceError, match=r"gives 1 image\(s\) two different tags: 's0' \('glioma', 'meningioma'\)"):
        add_labels(pool, tmp_path / "two.xml", tmp_path / "r3.parquet")
    (tmp_path / "other.xml").write_text("<project/>")
    with pytest.raises(SourceError, match="not a CVAT for images 1.1 file"):
        add_labels(pool, tmp_path / "other.xml", tmp_path / "r3.parquet")
    (tmp_path / "broken.xml").write_text("<annotations><image name='s0.png'>")
    with pytest.raises(SourceError, match="is not a readable XML file"):
        add_labels(pool, tmp_path / "broken.xml", tmp_path / "r3.parquet")
    with pytest.raises(SourceError, match="id_column and label_column .* name a CSV's columns"):
        add_labels(pool, tmp_path / "annotations.xml", tmp_path / "r3.parquet", id_column="egal_id")
    assert not (tmp_path / "r3.parquet").exists()


def test_a_boxes_pool_exports_to_folders_as_masks_of_its_boxes(box_pool, tmp_path):
    export_selection(box_pool, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "unlabeled" / "d0.dcm").is_file()
    mask = read_mask_png((tmp_path / "out" / "unlabeled" / "d0_mask.png").read_bytes())
    assert np.array_equal(mask, mask_from_boxes([[6, 5, 30, 25.5], [40, 10, 60, 50]], (50, 60), (50, 60)) == 1)


# --- add_labels -------------------------------------------------------------------------------

def test_add_labels_reports_what_changed(mask_pool, tmp_path):
    labels = write_csv(tmp_path / "labels.csv", ["id", "label"], [["s2", "glioma"], ["s5", "meningioma"],
                                                                  ["s0", "glioma"], ["s3", ""]])
    result = add_labels(mask_pool, labels, tmp_path / "round2.parquet")
    assert (result.newly_labelled, result.unchanged, result.ignored_empty) == (2, 1, 1) and not result.relabelled
    after = {r["id"]: r for r in pq.read_table(result.out).to_pylist()}
    before = {r["id"]: r for r in pq.read_table(mask_pool).to_pylist()}
    assert after["s2"]["label"] == "glioma" and after["s5"]["label"] == "meningioma"
    assert all(after[i]["image"] == before[i]["image"] and after[i]["group"] == before[i]["group"] for i in before)
    assert result.classes == {"glioma": 3, "meningioma": 3}


def test_add_labels_refusals(mask_pool, tmp_path):
    out = tmp_path / "r.parquet"

    def labels(*rows, header=("id", "label")):
        return write_csv(tmp_path / "l.csv", list(header), rows)

    with pytest.raises(SourceError, match=r"names 1 id\(s\) that are not in the pool: 'zz'"):
        add_labels(mask_pool, labels(["s2", "glioma"], ["zz", "glioma"]), out)
    with pytest.raises(SourceError, match="two different labels"):
        add_labels(mask_pool, labels(["s2", "glioma"], ["s2", "meningioma"]), out)
    with pytest.raises(SourceError, match=r"would change the label of 1 labelled row.*relabel=True"):
        add_labels(mask_pool, labels(["s0", "meningioma"]), out)
    with pytest.raises(SourceError, match=r"never seen: \['gliomma'\]"):
        add_labels(mask_pool, labels(["s2", "gliomma"]), out)
    with pytest.raises(SourceError, match="id_column='egal_id'"):
        add_labels(mask_pool, labels(["s2", "glioma"], header=("egal_id", "label")), out)
    assert not out.exists()
    changed = add_labels(mask_pool, labels(["s0", "meningioma"], ["s2", "pituitary"]), out, relabel=True,
                         allow_new_classes=True)
    assert changed.relabelled == [("s0", "glioma", "meningioma")] and changed.new_classes == ["pituitary"]


def test_add_labels_never_writes_over_or_into_its_pool(mask_pool, tmp_path):
    labels = write_csv(tmp_path / "l.csv", ["id", "label"], [["s2", "glioma"]])
    before = Path(mask_pool).read_bytes()
    with pytest.raises(SourceError, match=r"is the same file as the pool: writing it would destroy that input"):
        add_labels(mask_pool, labels, mask_pool, overwrite=True)
    assert Path(mask_pool).read_bytes() == before
    # A folder pool: a file written into the folder would join the pool, every id twice.
    folder = tmp_path / "folder_pool"
    folder.mkdir()
    table = pq.read_table(mask_pool)
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), folder / "a.parquet")
    pq.write_table(table.slice(half), folder / "b.parquet")
    with pytest.raises(SourceError, match=r"is inside the folder pool .*each id twice"):
        add_labels(folder, labels, folder / "round2.parquet")
    with pytest.raises(SourceError, match=r"is the same file as the pool's file"):
        add_labels(folder, labels, folder / "a.parquet", overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["a.parquet", "b.parquet"]
    assert add_labels(folder, labels, tmp_path / "round2.parquet").newly_labelled == 1


def test_add_labels_keeps_integer_labels_integer(tmp_path):
    path = tmp_path / "int.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "image": [encode_png(np.zeros((4, 4), np.uint8))] * 2,
                             "label": pa.array([0, None], pa.int32())}), path)
    out = add_labels(path, write_csv(tmp_path / "l.csv", ["id", "label"], [["b", "0"]]), tmp_path / "o.parquet").out
    table = pq.read_table(out)
    assert table.schema.field("label").type == pa.int32() and table.column("label").to_pylist() == [0, 0]


# --- pool_info --------------------------------------------------------------------------------

def test_pool_info_counts_and_problems(mask_pool, box_pool, tmp_path):
    info = pool_info(mask_pool)
    assert info.rows == 6 and info.labels == {"glioma": 2, "meningioma": 2, None: 2}
    assert info.labelled_share == pytest.approx(4 / 6)
    assert info.roi == {"mask": 5, "boxes": 0, "none": 1}
    assert info.formats == {"PNG 8-bit grey": 5, "PNG 16-bit grey": 1} and info.sizes == {"40x30": 6}
    assert info.groups == {"count": 3, "min": 2, "median": 2.0, "max": 2, "rows_without_group": 0}
    assert not info.problems.skipped and "66.7 %" in info.summary()
    boxes = pool_info(box_pool)
    assert boxes.roi == {"mask": 0, "boxes": 1, "none": 1} and boxes.boxes == 2
    assert boxes.formats == {"DICOM 12-bit grey": 1, "PNG 8-bit grey": 1} and boxes.group_column is None
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"id": "x", "image": encode_png(np.zeros((10, 10), np.uint8)), "boxes": [[0.0, 0.0, 12.0, 5.0]]},
        {"id": "y", "image": b"garbage", "boxes": []}]), bad)
    problems = pool_info(bad).problems.skipped
    assert problems == {"box outside its image or malformed": 1, "image header unreadable": 1}
    assert json.loads(json.dumps(pool_info(bad).to_dict()))["problems"] == problems
    assert pool_info(bad).roi == {"mask": 0, "boxes": 0, "none": 2}  # a row in error has no ROI to count


@pytest.mark.parametrize("workers", [0, 1])
def test_pool_info_decode_finds_the_rows_whose_pixels_do_not_decode(tmp_path, workers):
    whole = encode_png((np.arange(40 * 40).reshape(40, 40) % 251).astype(np.uint8))
    truncated = whole[: len(whole) // 2]  # its header reads: only decoding finds it
    path = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"id": "ok", "image": whole, "boxes": [[2.0, 2.0, 10.0, 10.0]]},
        {"id": "cut", "image": truncated, "boxes": []},
        {"id": "junk", "image": b"garbage", "boxes": []},  # found from its header: reported once, as before
        {"id": "wide", "image": whole, "boxes": [[0.0, 0.0, 50.0, 5.0]]}]), path)
    headers = pool_info(path)
    assert headers.problems.skipped == {"image header unreadable": 1, "box outside its image or malformed": 1}
    assert not headers.decoded and "--decode" in headers.summary()
    decoded = pool_info(path, decode=True, workers=workers)
    assert decoded.problems.skipped == {"image header unreadable": 1, "box outside its image or malformed": 1,
                                        "image does not decode": 1}
    assert decoded.problems.examples["image does not decode"][0].startswith("cut: image: ")
    assert decoded.to_dict()["decoded"] is True and decoded.rows == headers.rows == 4
    assert (decoded.formats, decoded.sizes, decoded.roi) == (headers.formats, headers.sizes, headers.roi)
    clean = tmp_path / "clean.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "ok", "image": whole}]), clean)
    assert "every image, mask and box decoded" in pool_info(clean, decode=True).summary()


def test_pool_info_refuses_a_bad_worker_count(mask_pool):
    with pytest.raises(ValueError, match="workers"):
        pool_info(mask_pool, decode=True, workers=-1)


def test_pool_info_and_export_read_labels_from_the_column_named(mask_pool, tmp_path):
    table = pq.read_table(mask_pool)
    renamed = tmp_path / "diagnosis.parquet"
    pq.write_table(table.rename_columns(["diagnosis" if c == "label" else c for c in table.column_names]), renamed)
    assert pool_info(renamed).labels == {None: 6} and "has no 'label' column" in pool_info(renamed).summary()
    info = pool_info(renamed, label_column="diagnosis")
    assert info.labels == pool_info(mask_pool).labels and "Labels (diagnosis): 4 (66.7 %)" in info.summary()
    assert info.to_dict()["label_column"] == "diagnosis"
    # add-labels reads and writes the same column of the pool
    (tmp_path / "labels.csv").write_text("id,label\ns2,glioma\ns0,meningioma\n")
    with pytest.raises(SourceError, match=r"would change the label of 1 labelled row\(s\) \('s0': 'glioma' -> "):
        add_labels(renamed, tmp_path / "labels.csv", tmp_path / "r2.parquet", pool_label_column="diagnosis")
    (tmp_path / "labels.csv").write_text("id,label\ns2,glioma\n")
    result = add_labels(renamed, tmp_path / "labels.csv", tmp_path / "r2.parquet", pool_label_column="diagnosis")
    back = pq.read_table(tmp_path / "r2.parquet")
    assert result.newly_labelled == 1 and "label" not in back.column_names
    assert back.column("diagnosis").to_pylist()[2] == "glioma"
    with pytest.raises(ValueError, match="pool_label_column 'diagnosys' is not a column"):
        add_labels(renamed, tmp_path / "labels.csv", tmp_path / "r3.parquet", pool_label_column="diagnosys")
    with pytest.raises(ValueError, match="label_column 'diagnosys' is not a column of the pool"):
        pool_info(renamed, label_column="diagnosys")
    export_selection(renamed, tmp_path / "out", label_column="diagnosis", progress=False)
    export_selection(mask_pool, tmp_path / "reference", progress=False)
    files = lambda folder: sorted(str(f.relative_to(folder)) for f in folder.rglob("*.png"))  # noqa: E731
    assert files(tmp_path / "out") == files(tmp_path / "reference") and (tmp_path / "out" / "glioma").is_dir()
    with pytest.raises(ValueError, match="label_column 'nope' is not a column"):
        export_selection(renamed, tmp_path / "out2", label_column="nope", progress=False)
    assert not (tmp_path / "out2").exists()


def test_pool_info_does_not_count_empty_group_cells_as_a_group(tmp_path):
    png = encode_png(np.zeros((4, 4), np.uint8))
    path = tmp_path / "groups.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "image": [png] * 3, "group": pa.array([None] * 3, pa.string())}),
                   path)
    info = pool_info(path)
    assert info.groups["count"] == 0 and "none, the column is empty in every row" in info.summary()
    pq.write_table(pa.table({"id": ["a", "b", "c"], "image": [png] * 3, "group": ["p1", None, "p1"]}), path)
    info = pool_info(path)
    assert info.groups == {"count": 1, "min": 2, "median": 2.0, "max": 2, "rows_without_group": 1}
    assert "1 (33.3 %) rows without a group" in info.summary()


# --- the real pool -----------------------------------------------------------------------------

@pytest.mark.skipif(not FIGSHARE.is_file(), reason=f"the figshare brain-tumour pool is not at {FIGSHARE} "
                    "(../shared/data, see DATASETS.md)")
def test_figshare_pool_written_as_folders_imports_back_identical(tmp_path):
    table = pq.read_table(FIGSHARE, columns=["id", "image", "mask", "label", "cv_fold"])
    subset = table.take(np.linspace(0, table.num_rows - 1, ROUND_TRIP_ROWS).astype(int))  # every class, every fold
    assert set(subset.column("label").to_pylist()) == {"glioma", "meningioma", "pituitary"}
    pool = tmp_path / "figshare_subset.parquet"
    pq.write_table(subset, pool)
    export_selection(pool, tmp_path / "folders", progress=False)
    back = from_folders(tmp_path / "folders", tmp_path / "back.parquet", progress=False)
    assert back.rows == ROUND_TRIP_ROWS and not back.skipped.skipped
    original = {r["id"]: r for r in subset.to_pylist()}
    imported = {r["id"]: r for r in pq.read_table(back.out).to_pylist()}
    assert imported.keys() == original.keys()
    for ident, row in imported.items():
        assert row["image"] == original[ident]["image"], ident
        assert row["mask"] == original[ident]["mask"], ident
        assert row["label"] == original[ident]["label"], ident


def test_a_pool_of_paths_exports_the_files_it_references(tmp_path):
    from pool_import_sources import folder_image

    folder_image(tmp_path / "src" / "glioma" / "a.png", 10, mask_box=(1, 2, 6, 7))
    pool = from_folders(tmp_path / "src", tmp_path / "src" / "pool.parquet", images_as="paths", progress=False).out
    export_selection(pool, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "glioma" / "a.png").read_bytes() == (tmp_path / "src" / "glioma" / "a.png").read_bytes()
    assert (tmp_path / "out" / "glioma" / "a_mask.png").read_bytes() == (
        tmp_path / "src" / "glioma" / "a_mask.png").read_bytes()


@pytest.mark.parametrize("to", ["label-studio", "cvat", "folders"])
def test_a_malformed_box_an_overlong_id_or_a_control_character_is_named_not_a_traceback(tmp_path, to):
    image = encode_png(np.zeros((50, 60), np.uint8))
    for name, row, needle in (("threes", {"id": "d0", "image": image, "boxes": [[1.0, 2.0, 3.0]], "label": None},
                               "box 0 has 3 numbers"),
                              ("long", {"id": "x" * 300, "image": image, "boxes": [[1.0, 1.0, 5.0, 5.0]],
                                        "label": None},
                               "too long for a file name"),
                              # before, CVAT's annotations.xml was written and did not parse
                              ("control-id", {"id": "ctl\x0bvt", "image": image, "boxes": [[1.0, 1.0, 5.0, 5.0]],
                                              "label": None},
                               r"id 'ctl\\x0bvt' holds the control character '\\x0b'"),
                              ("control-label", {"id": "d1", "image": image, "boxes": [[1.0, 1.0, 5.0, 5.0]],
                                                 "label": "a\x1bb"},
                               r"label 'a\\x1bb' holds the control character '\\x1b'")):
        pool = tmp_path / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist([row]), pool)
        with pytest.raises(SourceError, match=needle):
            export_selection(pool, tmp_path / f"out-{name}-{to}", to=to, progress=False)
        assert not (tmp_path / f"out-{name}-{to}").exists()


HOSTILE_IDS = ['=HYPERLINK("http://x","click")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(1)", "'=quoted", "s0"]


def test_csv_cells_that_a_spreadsheet_would_run_are_written_as_text_and_read_back_as_the_ids(tmp_path):
    """Ids and class names come from whoever made the pool; a cell starting with = + - @ is a formula in Excel or
    LibreOffice. Every CSV egal writes for people escapes it (a leading apostrophe), and every reader of those files
    (export-selection, add-labels, egal report) finds the pool's rows from the escaped cells."""
    from egal.selection.csv_file import write_selection_csv

    rows = [{"id": ident, "image": encode_png(np.full((30, 40), 10 * k, np.uint8)),
             "label": "=1+1" if k == 0 else None} for k, ident in enumerate(HOSTILE_IDS)]
    pool = tmp_path / "pool.parquet"
    pq.write_table(pa.Table.from_pylist(rows), pool)
    ranked = pa.table({"rank": list(range(1, len(HOSTILE_IDS) + 1)), "id": HOSTILE_IDS,
                       "score": [0.9 - k / 20 for k in range(len(HOSTILE_IDS))], "entropy_norm": [0.5] * 6,
                       "misalignment": [0.7] * 6, "pred": ["=2+2"] * 6})
    write_selection_csv(ranked, str(tmp_path / "scores.selection.csv"))
    export_selection(pool, tmp_path / "out", selection=str(tmp_path / "scores.selection.csv"), progress=False)
    for written in (tmp_path / "scores.selection.csv", tmp_path / "out" / "selection.csv"):
        with open(written, newline="") as f:
            cells = [cell for row in csv.reader(f) for cell in row]
        assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t"))], written
    with open(tmp_path / "out" / "selection.csv", newline="") as f:
        listed = list(csv.DictReader(f))
    assert [r["id"] for r in listed] == ["'" + i if i != "s0" else i for i in HOSTILE_IDS]
    assert listed[0]["label"] == "'=1+1" and listed[0]["pred"] == "'=2+2"  # escaped once, not twice
    # The annotator fills the label column and saves; add-labels finds every row.
    labels = write_csv(tmp_path / "labels.csv", ["id", "label"], [[r["id"], "'=1+1"] for r in listed])
    result = add_labels(pool, labels, tmp_path / "labelled.parquet")
    assert result.newly_labelled == 5 and result.unchanged == 1
    assert pq.read_table(tmp_path / "labelled.parquet").column("label").to_pylist() == ["=1+1"] * 6
    # A spreadsheet that saves the text without its apostrophe gives the ids exactly: found too.
    raw = write_csv(tmp_path / "raw.csv", ["id", "label"], [[i, "=1+1"] for i in HOSTILE_IDS])
    assert add_labels(pool, raw, tmp_path / "again.parquet").newly_labelled == 5


def test_file_names_of_ids_are_valid_on_windows_and_map_back_to_the_ids(tmp_path):
    """An export goes to annotators, often on Windows, where 'scan:1.png' or 'CON.png' cannot exist."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from egal.importers.file_names import WINDOWS_DEVICE_NAMES, name_of, text_of_name

    for ident, stem in (("CON", "%43ON"), ("con.txt", "%63on.txt"), ("COM1.x", "%43OM1.x"), ("Lpt9", "%4Cpt9"),
                        ("a:b", "a%3Ab"), ('x*?"<>|y', "x%2A%3F%22%3C%3E%7Cy"), ("console", "console"),
                        ("%43ON", "%2543ON"), (".hidden", "%2Ehidden"), ("COM\u00b9", "%43OM\u00b9"),
                        ("grade 2.", "grade 2%2E"), ("a ", "a%20"), ("CON.", "%43ON%2E")):
        assert (name_of(ident), text_of_name(name_of(ident))) == (stem, ident)

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet=st.sampled_from('%/\\:*?"<>|.CONcon1LPTAUX% a\u00b9'), min_size=1, max_size=12))
    def round_trip(ident):
        stem = name_of(ident)
        assert text_of_name(stem) == ident
        assert not set('/\\:*?"<>|') & set(stem) and not stem.startswith(".") and not stem.endswith((".", " "))
        assert stem.split(".", 1)[0].rstrip(" ").upper() not in WINDOWS_DEVICE_NAMES

    round_trip()
    rows = [{"id": ident, "image": encode_png(np.full((20, 20), 9 * k, np.uint8)), "label": None}
            for k, ident in enumerate(["CON", "scan:1", "a|b"])]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pool.parquet")
    export_selection(tmp_path / "pool.parquet", tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out" / "unlabeled").iterdir()) == ["%43ON.png", "a%7Cb.png",
                                                                                 "scan%3A1.png"]


def test_labels_that_windows_cannot_name_a_folder_are_escaped_and_come_back_through_from_folders(tmp_path):
    """The folders target names a class's folder by the ids' rule (egal.importers.file_names): a class 'CON', 'aux' or
    'a:b' would otherwise be a folder that Windows cannot open, and from_folders reads the escaped name back."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from egal.importers.file_names import name_of
    from egal.pool.labels import is_label

    def round_trip(folder: Path, labels: list[str]) -> dict:
        folder.mkdir()
        rows = [{"id": f"r{k}", "image": encode_png(np.full((8, 8), k, np.uint8)), "label": label}
                for k, label in enumerate(labels)]
        pq.write_table(pa.Table.from_pylist(rows), folder / "pool.parquet")
        export_selection(folder / "pool.parquet", folder / "out", progress=False)
        folders = {p.name for p in (folder / "out").iterdir() if p.is_dir()}
        assert folders == {name_of(label) for label in labels}
        back = from_folders(folder / "out", folder / "back.parquet", progress=False).out
        return dict(zip(*pq.read_table(back, columns=["id", "label"]).to_pydict().values(), strict=True))

    labels = ["CON", "aux", "a:b", "x/y", ".hidden", "grade 2.", "COM3.x", "100%", "LPT\u00b9", "glioma"]
    assert round_trip(tmp_path / "fixed", labels) == {f"r{k}": label for k, label in enumerate(labels)}
    assert {p.name for p in (tmp_path / "fixed" / "out").iterdir() if p.is_dir()} >= {
        "%43ON", "%61ux", "a%3Ab", "x%2Fy", "%2Ehidden", "grade 2%2E", "%43OM3.x", "100%25", "%4CPT\u00b9"}
    examples = iter(range(10**6))

    @settings(max_examples=40, deadline=None)
    @given(st.lists(st.text(alphabet=st.sampled_from('%/\\:*?"<>|.CONcon1LPTAUX a'), min_size=1, max_size=8)
                    .filter(lambda t: is_label(t) and t.casefold() != "unlabeled"), min_size=1, max_size=4,
                    unique_by=lambda t: name_of(t).casefold()))
    def any_labels(labels):
        assert round_trip(tmp_path / f"h{next(examples)}", labels) == {f"r{k}": v for k, v in enumerate(labels)}

    any_labels()


def test_labels_sharing_a_folder_or_an_unlabeled_folder_windows_cannot_hold_are_refused(mask_pool, tmp_path):
    table = pq.read_table(mask_pool)
    pool = tmp_path / "cases.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("label"), "label",
                                    pa.array(["Glioma", "glioma", None, "x", "x", None])), pool)
    with pytest.raises(SourceError, match="the labels 'Glioma' and 'glioma' would share the folder 'glioma' on a "
                                          "case-insensitive file system"):
        export_selection(pool, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    export_selection(pool, tmp_path / "ls", to="label-studio", progress=False)  # no folder per class there
    for folder in ("CON", "a:b", ".u", "u."):
        with pytest.raises(SourceError, match=f"unlabeled_folder {folder!r} is not a folder name that every system"):
            export_selection(mask_pool, tmp_path / "out", unlabeled_folder=folder, progress=False)
