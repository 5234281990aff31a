"""egal.importers.from_vindr_cxr and from_siim_covid on DICOM files written with pydicom, with the
datasets' real CSV columns: merging readers' boxes, the label tasks, DICOM conversion (MONOCHROME1,
rescale, VOI window) against the pool decoder, box geometry after resizing, and skips."""
from __future__ import annotations

import shutil
from io import BytesIO

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from egal.importers import SourceError, from_siim_covid, from_vindr_cxr
from egal.pool import DecodeSettings, load_pool_arrays
from pool_import_sources import (
    SIIM_IMAGE_COLUMNS,
    SIIM_STUDY_COLUMNS,
    VINDR_ARCHIVE_COLUMNS,
    VINDR_CLASS_IDS,
    VINDR_COMPETITION_COLUMNS,
    radiograph,
    write_csv,
    write_dicom,
)

H, W = 240, 300  # the radiographs' stored size (rows, columns)
CARDIO_R1, CARDIO_R2 = (100.0, 120.0, 200.0, 180.0), (104.0, 124.0, 204.0, 184.0)
NODULE_R1 = (20.0, 30.0, 40.0, 50.0)


def rows_by_id(path):
    return {r["id"]: r for r in pq.read_table(path).to_pylist()}


def vindr_rows(archive: bool):
    """(image_id, class_name, rad_id, box) rows of the annotation table."""
    return [
        ("imgA", "Cardiomegaly", "R1", CARDIO_R1), ("imgA", "Cardiomegaly", "R2", CARDIO_R2),
        ("imgA", "Nodule/Mass", "R1", NODULE_R1), ("imgA", "No finding", "R3", None),
        ("imgB", "No finding", "R1", None), ("imgB", "No finding", "R2", None), ("imgB", "No finding", "R3", None),
        ("imgC", "Cardiomegaly", "R1", CARDIO_R1),  # its file is missing
        ("imgE", "Aortic enlargement", "R2", (250.0, 200.0, 310.0, 230.0)),  # beyond the 300-wide image
        ("imgF", "Nodule/Mass", "R1", NODULE_R1), ("imgF", "Nodule/Mass", "R2", NODULE_R1),
    ]


@pytest.fixture(params=["competition", "archive"])
def vindr(tmp_path, request):
    root = tmp_path / "vinbigdata"
    archive = request.param == "archive"
    table = []
    for image_id, finding, reader, box in vindr_rows(archive):
        cells = ["", "", "", ""] if box is None else [f"{v:.1f}" for v in box]
        if archive:
            table.append([image_id, reader, finding, *cells])
        else:
            table.append([image_id, finding, VINDR_CLASS_IDS.get(finding, 0), reader, *cells])
    if archive:
        write_csv(root / "annotations" / "annotations_train.csv", VINDR_ARCHIVE_COLUMNS, table)
    else:
        write_csv(root / "train.csv", VINDR_COMPETITION_COLUMNS, table)
    # imgA: MONOCHROME1 with a rescale and a VOI window, as many radiographs are stored
    write_dicom(root / "train" / "imgA.dicom", radiograph(H, W), 1, photometric="MONOCHROME1", bits_stored=12,
                rescale=(2.0, -100.0), window=(3000.0, 2500.0))
    for k, name in enumerate(("imgB", "imgD", "imgE", "imgF"), start=2):
        write_dicom(root / "train" / f"{name}.dicom", radiograph(H, W, seed=k), k, bits_stored=12)
    return root


def test_union_abnormal_boxes_labels_and_skips(vindr, tmp_path):
    result = from_vindr_cxr(vindr, tmp_path / "cxr.parquet", max_side=0, progress=False)
    rows = rows_by_id(result.out)
    assert set(rows) == {"imgA", "imgB", "imgF"}
    assert rows["imgA"]["label"] == "abnormal" and rows["imgB"]["label"] == "normal"
    assert sorted(map(tuple, rows["imgA"]["boxes"])) == sorted([CARDIO_R1, CARDIO_R2, NODULE_R1])
    assert rows["imgB"]["boxes"] == [] and rows["imgA"]["findings"] == ["Cardiomegaly", "Nodule/Mass"]
    assert rows["imgF"]["boxes"] == [list(NODULE_R1)]  # two readers' identical boxes, once
    assert rows["imgA"]["group"] == "imgA"
    assert result.skipped.skipped == {"image without annotation": 1, "annotated image missing from the image folder": 1,
                                      "box outside its image": 1}
    clipped = from_vindr_cxr(vindr, tmp_path / "c.parquet", max_side=0, out_of_image="clip", progress=False)
    assert rows_by_id(clipped.out)["imgE"]["boxes"] == [[250.0, 200.0, 300.0, 230.0]]


def test_agree_keeps_what_two_readers_marked_averaged(vindr, tmp_path):
    result = from_vindr_cxr(vindr, tmp_path / "cxr.parquet", merge="agree", max_side=0, progress=False)
    rows = rows_by_id(result.out)
    mean = [(a + b) / 2 for a, b in zip(CARDIO_R1, CARDIO_R2, strict=True)]
    assert rows["imgA"]["boxes"] == [mean] and rows["imgA"]["findings"] == ["Cardiomegaly"]
    assert rows["imgF"]["boxes"] == [list(NODULE_R1)] and rows["imgF"]["label"] == "abnormal"
    # imgE: one reader's finding only: neither agreed nor absent, so not "normal" (it was): skipped, counted
    assert "imgE" not in rows
    reason = "a finding fewer than 2 readers marked, and none they agree on (merge agree): not normal either"
    assert result.skipped.examples[reason] == ["imgE: Aortic enlargement"]


def test_finding_and_map_tasks(vindr, tmp_path):
    cardio = from_vindr_cxr(vindr, tmp_path / "a.parquet", task="finding", finding="Cardiomegaly", max_side=0,
                            progress=False)
    rows = rows_by_id(cardio.out)
    assert rows["imgA"]["label"] == "Cardiomegaly" and sorted(map(tuple, rows["imgA"]["boxes"])) == sorted(
        [CARDIO_R1, CARDIO_R2])
    assert rows["imgB"]["label"] == "No finding" and "imgF" not in rows
    assert cardio.skipped.skipped["no finding label: other findings only, not 'Cardiomegaly'"] == 2  # imgE, imgF
    class_map = write_csv(tmp_path / "map.csv", ["class_name", "label"],
                          [["Nodule/Mass", "nodule"], ["Cardiomegaly", "heart"], ["No finding", "normal"]])
    mapped = from_vindr_cxr(vindr, tmp_path / "m.parquet", task="map", class_map=str(class_map), max_side=0,
                            out_of_image="clip", progress=False)
    rows = rows_by_id(mapped.out)
    assert rows["imgF"]["label"] == "nodule" and rows["imgB"]["label"] == "normal" and "imgA" not in rows
    assert mapped.skipped.skipped["no map label: findings map to several classes"] == 1
    assert mapped.skipped.skipped["no map label: no finding of the class map"] == 1  # imgE: Aortic enlargement


def test_png_conversion_matches_the_pool_decoder(vindr, tmp_path):
    """MONOCHROME1, rescale and VOI window: the 16-bit PNG decodes as the DICOM does, to 16-bit precision."""
    png = from_vindr_cxr(vindr, tmp_path / "png.parquet", max_side=0, progress=False).out
    raw = from_vindr_cxr(vindr, tmp_path / "raw.parquet", images_as="bytes", progress=False).out
    assert rows_by_id(raw)["imgA"]["image"] == (vindr / "train" / "imgA.dicom").read_bytes()
    settings = DecodeSettings(input_size=(H, W))
    a, b = load_pool_arrays(png, settings), load_pool_arrays(raw, settings)
    assert list(a["ids"]) == list(b["ids"])
    assert np.abs(a["images"] - b["images"]).max() < 1e-4
    stored = radiograph(H, W).astype(np.float64) * 2 - 100  # MONOCHROME1: low values are bright
    image = np.asarray(Image.open(BytesIO(rows_by_id(png)["imgA"]["image"])))
    assert image.dtype == np.uint16
    assert image[np.unravel_index(np.argmin(stored), stored.shape)] == image.max()


def test_boxes_follow_the_image_when_it_is_shrunk(vindr, tmp_path):
    small = from_vindr_cxr(vindr, tmp_path / "small.parquet", max_side=150, progress=False).out
    full = from_vindr_cxr(vindr, tmp_path / "full.parquet", images_as="bytes", progress=False).out
    shrunk = rows_by_id(small)["imgA"]
    assert Image.open(BytesIO(shrunk["image"])).size == (150, 120)
    assert [50.0, 60.0, 100.0, 90.0] in shrunk["boxes"]  # CARDIO_R1 at half size
    settings = DecodeSettings(input_size=(60, 75))
    a, b = load_pool_arrays(small, settings), load_pool_arrays(full, settings)
    assert np.array_equal(a["masks"], b["masks"]) and a["masks"].sum() > 0


def test_vindr_refusals(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SourceError, match="neither VinDr-CXR layout"):
        from_vindr_cxr(tmp_path / "nothing", tmp_path / "p.parquet", progress=False)
    with pytest.raises(ValueError, match="^finding must name a finding"):
        from_vindr_cxr(tmp_path, tmp_path / "p.parquet", task="finding")
    write_csv(tmp_path / "bad" / "train.csv", ["image_id", "class_name"], [["a", "No finding"]])
    (tmp_path / "bad" / "train").mkdir()
    with pytest.raises(SourceError, match=r"lacks column\(s\) \['x_min'"):
        from_vindr_cxr(tmp_path / "bad", tmp_path / "p.parquet", progress=False)


# --- SIIM-COVID-19 ------------------------------------------------------------------------------

@pytest.fixture
def siim(tmp_path):
    root = tmp_path / "siim-covid19-detection"
    write_csv(root / "train_study_level.csv", SIIM_STUDY_COLUMNS, [
        ["st1_study", 0, 1, 0, 0], ["st2_study", 1, 0, 0, 0], ["st3_study", 0, 1, 1, 0]])
    boxes = "[{'x': 30.5, 'y': 40.25, 'width': 100.0, 'height': 80.0}, {'x': 150, 'y': 60, 'width': 50, 'height': 50}]"
    write_csv(root / "train_image_level.csv", SIIM_IMAGE_COLUMNS, [
        ["im1_image", boxes, "opacity 1 30.5 40.25 130.5 120.25 opacity 1 150 60 200 110", "st1"],
        ["im2_image", "", "none 1 0 0 1 1", "st2"],
        ["im3_image", "", "none 1 0 0 1 1", "st3"],  # its study is not one-hot
        ["im4_image", "", "none 1 0 0 1 1", "st1"],  # no file
    ])
    write_dicom(root / "train" / "st1" / "se1" / "im1.dcm", radiograph(H, W), 1, photometric="MONOCHROME1")
    write_dicom(root / "train" / "st2" / "se2" / "im2.dcm", radiograph(H, W, seed=2), 2)
    write_dicom(root / "train" / "st3" / "se3" / "im3.dcm", radiograph(H, W, seed=3), 3)
    write_dicom(root / "train" / "st2" / "se2" / "im5.dcm", radiograph(H, W, seed=5), 5)  # not in the table
    return root


def test_siim_study_labels_joined_to_image_boxes(siim, tmp_path):
    result = from_siim_covid(siim, tmp_path / "covid.parquet", max_side=0, progress=False)
    rows = rows_by_id(result.out)
    assert set(rows) == {"im1", "im2"}
    assert rows["im1"]["label"] == "typical" and rows["im1"]["group"] == "st1"
    assert rows["im1"]["boxes"] == [[30.5, 40.25, 130.5, 120.25], [150.0, 60.0, 200.0, 110.0]]
    assert rows["im2"]["label"] == "negative" and rows["im2"]["boxes"] == []
    assert result.rows_with_roi == 1
    assert result.skipped.skipped == {"study label is not one-hot": 1,
                                      "image file missing (train/<study>/<series>/<image>.dcm)": 1,
                                      "image without annotation": 1}
    paths = from_siim_covid(siim, siim / "covid.parquet", images_as="paths", progress=False)
    assert rows_by_id(paths.out)["im1"]["image_path"] == "train/st1/se1/im1.dcm"


def test_siim_refuses_another_layout(tmp_path):
    with pytest.raises(SourceError, match="train_study_level.csv is missing"):
        from_siim_covid(tmp_path, tmp_path / "p.parquet", progress=False)


def test_a_table_without_readers_is_one_consensus_reading(tmp_path):
    root = tmp_path / "vindr"
    write_csv(root / "annotations" / "annotations_test.csv", ["image_id", "class_name", "x_min", "y_min", "x_max",
                                                              "y_max"],
              [["t1", "Cardiomegaly", *CARDIO_R1], ["t1", "Nodule/Mass", *NODULE_R1], ["t2", "No finding", "", "", "",
                                                                                      ""]])
    write_dicom(root / "test" / "t1.dicom", radiograph(H, W), 1)
    write_dicom(root / "test" / "t2.dicom", radiograph(H, W, seed=1), 2)
    result = from_vindr_cxr(root, tmp_path / "test.parquet", split="test", merge="agree", max_side=0, progress=False)
    rows = rows_by_id(result.out)
    assert sorted(map(tuple, rows["t1"]["boxes"])) == sorted([CARDIO_R1, NODULE_R1])
    assert rows["t2"]["label"] == "normal"


def test_a_finding_the_table_does_not_name_is_refused_with_the_names(vindr, tmp_path):
    with pytest.raises(SourceError, match=r"finding \(--finding\) 'cardiomegaly' is not a class_name .*'Cardiomegaly'"):
        from_vindr_cxr(vindr, tmp_path / "a.parquet", task="finding", finding="cardiomegaly", progress=False)
    assert not (tmp_path / "a.parquet").exists()


def test_two_files_for_one_vindr_image_are_refused_naming_both(vindr, tmp_path):
    shutil.copy(vindr / "train" / "imgB.dicom", vindr / "train" / "imgB.dcm")
    with pytest.raises(SourceError, match=r"two images for image_id 'imgB': imgB.dcm and imgB.dicom; keep one"):
        from_vindr_cxr(vindr, tmp_path / "a.parquet", progress=False)
    assert not (tmp_path / "a.parquet").exists()


@pytest.mark.parametrize("images_as", ["png", "bytes", "paths"])
def test_a_dicom_whose_pixels_cannot_be_decoded_is_skipped_whatever_the_images_become(vindr, tmp_path, images_as):
    # Its header reads: --images-as bytes and paths read only that, and kept a row that failed at every scoring.
    cut = vindr / "train" / "imgB.dicom"
    cut.write_bytes(cut.read_bytes()[:-1000])
    result = from_vindr_cxr(vindr, vindr / "cxr.parquet", max_side=0, images_as=images_as, progress=False)
    assert set(rows_by_id(result.out)) == {"imgA", "imgF"}
    assert result.skipped.skipped["unreadable DICOM or bad box"] == 1
    assert result.skipped.examples["unreadable DICOM or bad box"][0].startswith("imgB: ")


def test_agree_takes_no_finding_from_enough_readers_as_agreed_absence():
    from egal.importers.vindr_cxr import VindrOptions, disputed_findings

    o = VindrOptions("unused", "unused.parquet", merge="agree")
    nodule = {"R1": [NODULE_R1]}
    # Two of three readers said "No finding", one marked a nodule: the absence is agreed (normal, as before).
    assert disputed_findings({"Nodule/Mass": nodule, "No finding": {"R2": [], "R3": []}}, o) == []
    # One reader each way: neither agreed: disputed, the image is skipped.
    assert disputed_findings({"Nodule/Mass": nodule, "No finding": {"R2": []}}, o) == ["Nodule/Mass"]
    # The reader who marked the nodule and also wrote "No finding" elsewhere does not count for the absence.
    assert disputed_findings({"Nodule/Mass": nodule, "No finding": {"R1": [], "R2": []}}, o) == ["Nodule/Mass"]


def test_siim_an_image_uid_filed_under_two_studies_finds_its_own_file(siim, tmp_path):
    # im1 also appears under study st2's folder (sorted after st1's): the index kept the last file it walked, and
    # the row of study st1 was skipped as "image file missing" although its file exists.
    write_dicom(siim / "train" / "st9" / "se9" / "im1.dcm", radiograph(H, W, seed=9), 9)
    result = from_siim_covid(siim, tmp_path / "covid.parquet", max_side=0, progress=False)
    assert rows_by_id(result.out)["im1"]["source_path"] == "train/st1/se1/im1.dcm"
