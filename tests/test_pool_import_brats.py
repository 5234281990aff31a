"""egal.importers.from_brats on BraTS cases written with nibabel: slices, ROI sub-regions, labels, groups,
orientation, windowing and skips."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("nibabel", reason="from_brats reads NIfTI with nibabel (pip install 'egal-al[import]')")

from PIL import Image  # noqa: E402

from egal.importers import SourceError, from_brats  # noqa: E402
from egal.importers.brats import ROI_LABELS  # noqa: E402
from egal.pool import DecodeSettings, load_pool_arrays  # noqa: E402
from egal.pool.rois import read_mask_png  # noqa: E402
from pool_import_sources import brats_case, write_csv  # noqa: E402

TUMOUR = (6, 18, 22, 34, 10, 20)  # x (patient's left side in RAS), y (anterior), z: slices 10..19


def rows(path):
    return pq.read_table(path).to_pylist()


def png(data):
    return np.asarray(Image.open(__import__("io").BytesIO(data)))


@pytest.fixture
def brats(tmp_path):
    root = tmp_path / "MICCAI_BraTS2020_TrainingData"
    brats_case(root, "BraTS20_Training_001", tumour=TUMOUR)
    brats_case(root, "BraTS20_Training_002", tumour=(20, 30, 5, 15, 12, 14), seed=1)
    write_csv(root / "name_mapping.csv", ["Grade", "BraTS_2017_subject_ID", "BraTS_2018_subject_ID",
                                          "TCGA_TCIA_subject_ID", "BraTS_2019_subject_ID", "BraTS_2020_subject_ID"],
              [["HGG", "Brats17_CBICA_AAB_1", "Brats18_CBICA_AAB_1", "NA", "BraTS19_CBICA_AAB_1",
                "BraTS20_Training_001"],
               # As in BraTS 2020's own file: "NA" where a case has no id of that edition, in HGG and LGG rows
               # alike (a first version took "NA" for a case given two labels).
               ["LGG", "Brats17_2013_0_1", "Brats18_2013_0_1", "NA", "BraTS19_2013_0_1", "BraTS20_Training_002"],
               ["LGG", "NA", "NA", "NA", "NA", "BraTS20_Training_369"]])
    return root


def test_tumour_slices_labels_groups_and_masks(brats, tmp_path):
    result = from_brats(brats, tmp_path / "pool.parquet", labels=str(brats / "name_mapping.csv"), min_roi_area=20,
                        progress=False)
    table = rows(result.out)
    case1 = [r for r in table if r["group"] == "BraTS20_Training_001"]
    assert [r["slice"] for r in case1] == list(range(10, 20))
    assert {r["label"] for r in case1} == {"HGG"}
    assert {r["label"] for r in table if r["group"] == "BraTS20_Training_002"} == {"LGG"}
    assert case1[0]["id"] == "BraTS20_Training_001_z010"
    assert all(r["roi_pixels"] == 12 * 12 for r in case1)  # the whole tumour, 12 x 12 voxels a slice
    assert result.labels == {"HGG": 10, "LGG": 2} and result.rows_with_roi == 12
    image = png(case1[0]["image"])
    assert image.dtype == np.uint16 and image.shape == (40, 48)  # rows = y (anterior up), columns = x
    assert result.skipped.skipped["slice without tumour (beyond the no-tumour share, --no-tumour-share)"] > 0


def test_the_mask_lands_on_the_lesion_anterior_up_patients_left_on_the_left(brats, tmp_path):
    out = from_brats(brats, tmp_path / "pool.parquet", progress=False).out
    row = next(r for r in rows(out) if r["id"] == "BraTS20_Training_001_z012")
    mask = read_mask_png(row["mask"])
    ys, xs = np.nonzero(mask)
    # RAS: voxel x 6..17 is the patient's left (left half of the image), y 22..33 anterior (upper half)
    assert (xs.min(), xs.max()) == (6, 17) and (ys.min(), ys.max()) == (40 - 34, 40 - 23)
    image = png(row["image"])
    assert image[mask].min() == 65535 and np.median(image[~mask & (image > 0)]) < 30000  # the bright lesion
    # decoded as egal score decodes it, at another size: the mask still covers the lesion
    arrays = load_pool_arrays(out, DecodeSettings(input_size=(20, 24)))
    k = list(arrays["ids"]).index("BraTS20_Training_001_z012")
    assert arrays["masks"][k].sum() > 0
    decoded, on = arrays["images"][k, 0], arrays["masks"][k] == 1
    assert decoded[on].mean() > 0.85 > 0.5 > np.median(decoded[~on & (decoded > 0)])


def test_an_lps_volume_gives_the_same_slices(brats, tmp_path):
    lps = tmp_path / "lps"
    x0, x1, y0, y1, z0, z1 = TUMOUR
    # The same anatomy stored with x running to the patient's left and y to posterior: the voxel
    # arrays flipped, the affine saying so.
    brats_case(lps, "BraTS20_Training_001", tumour=(48 - x1, 48 - x0, 40 - y1, 40 - y0, z0, z1),
               affine=np.diag([-1.0, -1.0, 1.0, 1.0]))
    ras = {r["id"]: r for r in rows(from_brats(brats, tmp_path / "ras.parquet", progress=False).out)}
    flipped = {r["id"]: r for r in rows(from_brats(lps, tmp_path / "lps.parquet", progress=False).out)}
    assert set(flipped) == {k for k in ras if k.startswith("BraTS20_Training_001")}
    for ident, row in flipped.items():
        assert row["mask"] == ras[ident]["mask"]


@pytest.mark.parametrize("roi", sorted(ROI_LABELS))
def test_sub_regions_in_both_label_conventions(tmp_path, roi):
    old, new = tmp_path / "2020", tmp_path / "2023"
    brats_case(old, "BraTS20_Training_003", tumour=TUMOUR)
    brats_case(new, "BraTS-GLI-00003-000", tumour=TUMOUR, edition=2023, seg_labels=(1, 2, 3))
    a = rows(from_brats(old, tmp_path / "a.parquet", roi=roi, min_roi_area=1, progress=False).out)
    b = rows(from_brats(new, tmp_path / "b.parquet", roi=roi, min_roi_area=1, modality="t1c", progress=False).out)
    assert [r["roi_pixels"] for r in a] == [r["roi_pixels"] for r in b]
    expected = {"wt": 144, "tc": 36, "et": 4}[roi]
    assert {r["roi_pixels"] for r in a} == {expected}


def test_min_area_no_tumour_share_and_its_label(brats, tmp_path):
    # every enhancing-tumour slice has 4 pixels, fewer than 5: nothing to import, and the reason is given
    with pytest.raises(SourceError, match=r"(?s)could be imported.*12  tumour smaller than min_roi_area"):
        from_brats(brats, tmp_path / "p.parquet", roi="et", min_roi_area=5, no_tumour_share=0.5, progress=False)
    assert not (tmp_path / "p.parquet").exists()
    kept = from_brats(brats, tmp_path / "q.parquet", min_roi_area=20, no_tumour_share=0.5,
                      no_tumour_label="no tumour", progress=False)
    table = rows(kept.out)
    empty = [r for r in table if r["roi_pixels"] == 0]
    assert len(empty) == 5 + 1 and {r["label"] for r in empty} == {"no tumour"}
    assert all(read_mask_png(r["mask"]).sum() == 0 for r in empty)


def test_skips_missing_segmentation_and_modality(brats, tmp_path):
    brats_case(brats, "BraTS20_Training_004", tumour=TUMOUR)
    (brats / "BraTS20_Training_004" / "BraTS20_Training_004_seg.nii.gz").unlink()
    brats_case(brats, "BraTS20_Training_005", tumour=TUMOUR)
    (brats / "BraTS20_Training_005" / "BraTS20_Training_005_t1ce.nii.gz").unlink()
    result = from_brats(brats, tmp_path / "p.parquet", labels=str(brats / "name_mapping.csv"), progress=False)
    assert result.skipped.skipped["case without segmentation file (no ROI to choose slices by)"] == 1
    assert result.skipped.skipped["case without a t1ce volume"] == 1
    plain = write_csv(tmp_path / "labels.csv", ["case", "label"], [["BraTS20_Training_001", "glioblastoma"]])
    relabelled = from_brats(brats, tmp_path / "r.parquet", labels=str(plain), progress=False)
    assert relabelled.labels.get("glioblastoma") == 10 and None in relabelled.labels
    assert relabelled.skipped.noted["case not in the labels table (kept unlabeled)"] == 1


def test_paths_mode_writes_pngs_beside_the_pool(brats, tmp_path):
    result = from_brats(brats, tmp_path / "pool.parquet", images_as="paths", progress=False)
    row = rows(result.out)[0]
    assert row["image_path"] == "pool_files/BraTS20_Training_001/BraTS20_Training_001_z010.png"
    assert (tmp_path / row["mask_path"]).is_file()


def test_overwrite_replaces_an_earlier_imports_files_folder_and_no_other(brats, tmp_path):
    first = from_brats(brats, tmp_path / "pool.parquet", images_as="paths", progress=False)
    again = from_brats(brats, tmp_path / "pool.parquet", images_as="paths", overwrite=True, progress=False)
    assert again.rows == first.rows and (tmp_path / "pool_files" / ".egal-pool-files").is_file()
    # The dataset itself named like the pool's files folder: `--out mri.parquet` on `mri_files/`.
    source = brats.rename(tmp_path / "mri_files")
    before = sorted(p.relative_to(source) for p in source.rglob("*"))
    with pytest.raises(SourceError, match=r"mri_files' is where this pool's image files go, and it exists but was "
                                          r"not written by an egal import .*even with --overwrite"):
        from_brats(source, tmp_path / "mri.parquet", images_as="paths", overwrite=True, progress=False)
    assert sorted(p.relative_to(source) for p in source.rglob("*")) == before
    assert not (tmp_path / "mri.parquet").exists()


def test_refusals(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no BraTS case"):
        from_brats(tmp_path / "empty", tmp_path / "p.parquet", progress=False)
    with pytest.raises(ValueError, match="^window must be two percentiles"):
        from_brats(tmp_path, tmp_path / "p.parquet", window=(99, 1))
    with pytest.raises(ValueError, match="^roi must be one of"):
        from_brats(tmp_path, tmp_path / "p.parquet", roi="core")


def test_a_case_folder_linked_into_the_dataset_is_imported(tmp_path):
    root = tmp_path / "data"
    brats_case(root, "A", tumour=TUMOUR)
    brats_case(tmp_path / "elsewhere", "L", tumour=TUMOUR, seed=2)
    (root / "L").symlink_to(tmp_path / "elsewhere" / "L")
    (root / "loop").symlink_to(root)  # a link back up: each real folder is read once
    result = from_brats(root, tmp_path / "pool.parquet", min_roi_area=20, progress=False)
    assert sorted({r["group"] for r in rows(result.out)}) == ["A", "L"]


def test_a_volume_holding_nan_is_skipped_with_its_reason(tmp_path):
    import nibabel

    root = tmp_path / "data"
    brats_case(root, "A", tumour=TUMOUR)
    brats_case(root, "B", tumour=TUMOUR)
    seg_file = root / "B" / "B_seg.nii.gz"
    seg = np.asarray(nibabel.load(str(seg_file)).dataobj).astype(np.float32)
    seg[0, 0, 0] = np.nan
    nibabel.save(nibabel.Nifti1Image(seg, np.eye(4)), str(seg_file))
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")  # NaN went through np.rint and a cast: a RuntimeWarning
        result = from_brats(root, tmp_path / "pool.parquet", min_roi_area=20, progress=False)
    assert {r["group"] for r in rows(result.out)} == {"A"}
    assert result.skipped.skipped == {"NaN or infinity in the volume or its segmentation": 1,
                                      **{k: v for k, v in result.skipped.skipped.items() if "NaN" not in k}}
    assert "B" in result.skipped.examples["NaN or infinity in the volume or its segmentation"]
