"""Small datasets in their published layouts, written on the fly for the egal.importers tests.

BraTS cases as NIfTI (nibabel), VinDr-CXR and SIIM-COVID-19 as DICOM (pydicom, through
egal.pool.encode.encode_dicom) with their real CSV column names, and the folders layout.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from egal.importers.imaging import encode_mask
from egal.pool.encode import encode_dicom, encode_png

# The header of VinDr-CXR's competition train.csv, as torchxrayvision 1.5.7 ships it
# (torchxrayvision/data/vinbigdata-train.csv.gz); the archive's annotations_train.csv has the
# same columns without class_id.
VINDR_COMPETITION_COLUMNS = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]
VINDR_ARCHIVE_COLUMNS = ["image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
VINDR_CLASS_IDS = {"Aortic enlargement": 0, "Cardiomegaly": 3, "Nodule/Mass": 8, "Pleural effusion": 10,
                   "No finding": 14}
# SIIM-COVID-19's train_study_level.csv and train_image_level.csv headers.
SIIM_STUDY_COLUMNS = ["id", "Negative for Pneumonia", "Typical Appearance", "Indeterminate Appearance",
                      "Atypical Appearance"]
SIIM_IMAGE_COLUMNS = ["id", "boxes", "label", "StudyInstanceUID"]


def write_csv(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def radiograph(height: int, width: int, seed: int = 0) -> np.ndarray:
    """[h, w] uint16 stored values (12 bits): a smooth background with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    values = 1500 + 800 * np.sin(xx / width * 3) * np.cos(yy / height * 2) + rng.normal(0, 40, (height, width))
    return np.clip(values, 0, 4095).astype(np.uint16)


def write_dicom(path: Path, stored: np.ndarray, instance: int, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_dicom(stored, instance=instance, **kwargs))
    return path


# --- BraTS ------------------------------------------------------------------------------------

def brats_case(folder: Path, case: str, *, shape=(48, 40, 30), tumour=None, affine=None, edition: int = 2020,
               seg_labels=(1, 2, 4), seed: int = 0) -> None:
    """One case: a brain ellipsoid (nonzero) in every modality, a tumour box of three sub-regions.

    tumour: (x0, x1, y0, y1, z0, z1) voxel ranges of the whole tumour; its inner half is the core
    (label seg_labels[0]), the centre the enhancing part (seg_labels[2]), the rest oedema (seg_labels[1]).
    """
    import nibabel

    rng = np.random.default_rng(seed)
    affine = np.eye(4) if affine is None else affine
    x, y, z = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]]
    c = [(s - 1) / 2 for s in shape]
    brain = ((x - c[0]) / (shape[0] * 0.45)) ** 2 + ((y - c[1]) / (shape[1] * 0.45)) ** 2 \
        + ((z - c[2]) / (shape[2] * 0.6)) ** 2 <= 1
    volume = np.where(brain, 300 + rng.normal(0, 20, shape), 0).astype(np.float32)
    seg = np.zeros(shape, np.uint8)
    if tumour is not None:
        x0, x1, y0, y1, z0, z1 = tumour
        seg[x0:x1, y0:y1, z0:z1] = seg_labels[1]
        cx0, cx1, cy0, cy1 = x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4, y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4
        seg[cx0:cx1, cy0:cy1, z0:z1] = seg_labels[0]
        mx, my = (x0 + x1) // 2, (y0 + y1) // 2
        seg[mx - 1:mx + 1, my - 1:my + 1, z0:z1] = seg_labels[2]
        volume[x0:x1, y0:y1, z0:z1] = 900  # bright lesion
    case_dir = folder / case
    case_dir.mkdir(parents=True, exist_ok=True)
    sep, names = ("_", ("t1ce", "flair")) if edition < 2023 else ("-", ("t1c", "t2f"))
    for name in names:
        nibabel.save(nibabel.Nifti1Image(volume, affine), str(case_dir / f"{case}{sep}{name}.nii.gz"))
    nibabel.save(nibabel.Nifti1Image(seg, affine), str(case_dir / f"{case}{sep}seg.nii.gz"))


# --- the folders layout -----------------------------------------------------------------------

def folder_image(path: Path, value: int, size=(24, 32), mask_box=None) -> None:
    """A grey PNG at path and, with mask_box (x0, y0, x1, y1), its mask beside it as NAME_mask.png."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(np.full(size, value, np.uint8)))
    if mask_box is not None:
        mask = np.zeros(size, bool)
        x0, y0, x1, y1 = mask_box
        mask[y0:y1, x0:x1] = True
        path.with_name(path.stem + "_mask.png").write_bytes(encode_mask(mask))
