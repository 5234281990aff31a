"""egal.demo_data.make_synthetic_pool: every format and storage round-trips; the task and its shortcut are there."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from egal.demo_data import make_synthetic_pool
from egal.pool import DecodeSettings, load_pool_arrays, open_pool

SIZE = 48
SETTINGS = DecodeSettings((SIZE, SIZE))
COLUMNS = ("label", "split", "shortcut")


def load(path, settings=SETTINGS):
    out = load_pool_arrays(path, settings, columns=COLUMNS)
    assert all(e is None for e in out["errors"]), [e for e in out["errors"] if e]
    return out


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    """The same 30 scenes in every image format."""
    root = tmp_path_factory.mktemp("formats")
    return {fmt: load(make_synthetic_pool(root / fmt, 30, seed=3, image_size=SIZE, image_format=fmt))
            for fmt in ("png", "jpeg", "png16", "dicom")}


def test_every_format_decodes_to_the_same_scenes(formats):
    png, png16 = formats["png"]["images"], formats["png16"]["images"]
    np.testing.assert_allclose(png, png16, atol=0.5 / 255 + 1e-6)  # 8-bit rounding of the same floats
    assert np.abs(formats["jpeg"]["images"] - png16).mean() < 0.02
    # DICOM holds 12-bit values and is min-max scaled when read.
    flat = png16.reshape(30, -1)
    low, high = flat.min(axis=1)[:, None, None, None], flat.max(axis=1)[:, None, None, None]
    np.testing.assert_allclose(formats["dicom"]["images"], (png16 - low) / (high - low), atol=3 / 4095)
    for out in formats.values():
        np.testing.assert_array_equal(out["masks"], formats["png"]["masks"])
        assert list(out["ids"]) == [f"syn_{i:05d}" for i in range(30)]


def test_dicom_files_are_proper_part10_files(tmp_path):
    from io import BytesIO

    import pydicom

    path = make_synthetic_pool(tmp_path, 2, image_size=SIZE, image_format="dicom")
    data = pq.read_table(path, columns=["image"]).column("image")[0].as_py()
    assert data[128:132] == b"DICM"
    ds = pydicom.dcmread(BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsStored == 12
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return load(make_synthetic_pool(tmp_path_factory.mktemp("ref"), 40, seed=5, image_size=SIZE))


@pytest.mark.parametrize(
    "kwargs",
    [dict(storage="path"), dict(roi="mask_path"), dict(storage="path", roi="mask_path", files=3), dict(files=4)],
)
def test_storages_and_file_splits_give_the_same_pool(tmp_path, reference, kwargs):
    path = make_synthetic_pool(tmp_path, 40, seed=5, image_size=SIZE, **kwargs)
    spec = open_pool(path)
    assert len(spec.files) == kwargs.get("files", 1)
    assert spec.image_column == ("image_path" if kwargs.get("storage") == "path" else "image")
    out = load(spec)
    for key in ("ids", "images", "masks", "has_roi", *COLUMNS):
        np.testing.assert_array_equal(out[key], reference[key], err_msg=key)


def test_boxes_are_the_bounding_boxes_of_the_masks(tmp_path, reference):
    out = load(make_synthetic_pool(tmp_path, 40, seed=5, image_size=SIZE, roi="boxes"))
    np.testing.assert_array_equal(out["has_roi"], reference["has_roi"])
    for box_mask, mask in zip(out["masks"], reference["masks"], strict=True):
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        expected = np.zeros_like(mask)
        expected[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = 1
        np.testing.assert_array_equal(box_mask, expected)


def test_roi_none_writes_no_roi_column(tmp_path):
    spec = open_pool(make_synthetic_pool(tmp_path, 6, image_size=SIZE, roi="none"))
    assert spec.roi_column is None and "mask" not in spec.columns


def test_same_seed_same_pool_other_seed_other_pool(tmp_path, reference):
    again = load(make_synthetic_pool(tmp_path / "a", 40, seed=5, image_size=SIZE))
    for key in reference:
        np.testing.assert_array_equal(again[key], reference[key], err_msg=key)
    other = load(make_synthetic_pool(tmp_path / "b", 40, seed=6, image_size=SIZE))
    assert not np.array_equal(other["images"], reference["images"])


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """Enough rows to measure rates."""
    path = make_synthetic_pool(tmp_path_factory.mktemp("big"), 600, seed=1, image_size=32)
    return load(path, DecodeSettings((32, 32)))


def test_classes_and_splits_are_balanced(big):
    counts = {c: int((big["label"] == c).sum()) for c in ("benign", "malignant", "normal")}
    assert counts == {"benign": 200, "malignant": 200, "normal": 200}
    assert (big["split"] == "test").mean() == pytest.approx(0.2, abs=0.001)


def test_label_fraction_unlabels_pool_rows_only(tmp_path):
    out = load(make_synthetic_pool(tmp_path, 100, image_size=32, label_fraction=0.5), DecodeSettings((32, 32)))
    test = out["split"] == "test"
    labelled = np.array([label is not None for label in out["label"]])
    assert labelled[test].all()
    assert labelled[~test].sum() == 40  # half of the 80 pool rows


def test_roi_is_the_lesion_and_normal_images_have_none(tmp_path):
    out = load(make_synthetic_pool(tmp_path, 90, seed=2, image_size=64, empty_roi_fraction=0.0),
               DecodeSettings((64, 64)))
    normal = out["label"] == "normal"
    assert not out["has_roi"][normal].any() and out["has_roi"][~normal].all()
    for image, mask in zip(out["images"][~normal, 0], out["masks"][~normal], strict=True):
        inside = image[mask == 1].mean()
        ring = _dilate(mask, 4) & (mask == 0)
        assert inside > image[ring].mean() + 0.04  # the lesion is brighter than the tissue around it


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    grown = mask.astype(bool)
    for _ in range(steps):
        grown = grown | np.roll(grown, 1, 0) | np.roll(grown, -1, 0) | np.roll(grown, 1, 1) | np.roll(grown, -1, 1)
    return grown


def test_empty_roi_fraction_withholds_rois(tmp_path):
    out = load(make_synthetic_pool(tmp_path, 20, image_size=SIZE, empty_roi_fraction=1.0))
    assert not out["has_roi"].any()


def test_the_shortcut_marker_follows_malignant_in_the_pool_split_only(big):
    marked = big["shortcut"].astype(bool)
    pool, test = big["split"] == "pool", big["split"] == "test"
    malignant = big["label"] == "malignant"
    assert marked[pool & malignant].mean() == pytest.approx(0.6, abs=0.1)
    assert marked[pool & ~malignant].mean() < 0.1
    assert abs(marked[test & malignant].mean() - marked[test & ~malignant].mean()) < 0.15
    # The marker is really drawn: a bright mark in a top corner, outside the ROI.
    corners = np.concatenate([big["images"][:, 0, :6, :6], big["images"][:, 0, :6, -6:]], axis=2)  # [N, 6, 12]
    assert (corners[marked].max(axis=(1, 2)) > 0.8).all()
    assert (corners[~marked].max(axis=(1, 2)) < 0.5).all()
    assert not big["masks"][:, :6, :6].any() and not big["masks"][:, :6, -6:].any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=0), "n must be"),
        (dict(image_size=8), "image_size"),
        (dict(image_format="tiff"), "image_format"),
        (dict(storage="s3"), "storage"),
        (dict(roi="polygon"), "roi"),
        (dict(label_fraction=1.5), "label_fraction"),
        (dict(classes=("a",)), "classes"),
        (dict(files=100, n=10), "files"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic_pool(tmp_path, **{"n": 10, **kwargs})


def test_rerun_with_fewer_files_leaves_no_stale_parts(tmp_path):
    make_synthetic_pool(tmp_path, 12, image_size=SIZE, files=4)
    spec = open_pool(make_synthetic_pool(tmp_path, 12, image_size=SIZE, files=2))
    assert len(spec.files) == 2 and spec.num_rows == 12
