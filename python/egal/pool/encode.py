"""Writing images in the encodings a pool may hold (the synthetic pool and tests use these).

PNG (8-bit grey or RGB, 16-bit grey) and JPEG through Pillow; DICOM through pydicom
as a proper Part 10 file (128-byte preamble, "DICM", file meta with Explicit VR
Little Endian), uncompressed.
"""
from __future__ import annotations

from io import BytesIO

import numpy as np
from PIL import Image

# A fixed, made-up UID root so that files written with the same inputs are identical bytes.
_UID_ROOT = "1.2.826.0.1.3680043.10.1234."
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def encode_png(pixels: np.ndarray) -> bytes:
    """[h, w] uint8 (grey), [h, w, 3] uint8 (RGB) or [h, w] uint16 (16-bit grey) -> PNG bytes."""
    pixels = np.ascontiguousarray(pixels)
    if pixels.dtype == np.uint16 and pixels.ndim == 2:
        image = Image.frombytes("I;16", (pixels.shape[1], pixels.shape[0]), pixels.astype("<u2").tobytes())
    elif pixels.dtype == np.uint8 and (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        image = Image.fromarray(pixels)
    else:
        raise ValueError(f"PNG pixels must be [h, w] uint8/uint16 or [h, w, 3] uint8, "
                         f"got {pixels.dtype} {pixels.shape}")
    out = BytesIO()
    # Level 1: pools are written once and read many times, but speed matters more than size here.
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def encode_jpeg(pixels: np.ndarray, quality: int = 92) -> bytes:
    """[h, w] or [h, w, 3] uint8 -> JPEG bytes."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"JPEG pixels must be uint8, got {pixels.dtype}")
    out = BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def encode_dicom(
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    rescale: tuple[float, float] | None = None,
    window: tuple[float, float] | None = None,
    instance: int = 1,
    preamble: bool = True,
) -> bytes:
    """[h, w] uint8/uint16/int16 stored values -> an uncompressed single-frame DICOM file.

    rescale: (slope, intercept), the Modality LUT; window: (center, width), the VOI LUT.
    preamble=False writes the data set without the 128-byte preamble and file meta
    (as some archives hand them out) to exercise the fallback detection.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    if stored.ndim != 2 or stored.dtype not in (np.uint8, np.uint16, np.int16):
        raise ValueError(f"DICOM stored values must be [h, w] uint8, uint16 or int16, "
                         f"got {stored.dtype} {stored.shape}")
    uid = f"{_UID_ROOT}{instance}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = f"{_UID_ROOT}0"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = _SECONDARY_CAPTURE
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = f"{uid}.1"
    ds.SeriesInstanceUID = f"{uid}.2"
    ds.Modality = "OT"
    ds.PatientID = "synthetic"
    ds.Rows, ds.Columns = (int(s) for s in stored.shape)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    allocated = stored.dtype.itemsize * 8
    ds.BitsAllocated = allocated
    ds.BitsStored = bits_stored or allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = (f"{float(v):g}" for v in rescale)
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = (f"{float(v):g}" for v in window)
    ds.PixelData = np.ascontiguousarray(stored).astype(stored.dtype.newbyteorder("<")).tobytes()
    out = BytesIO()
    if preamble:
        pydicom.dcmwrite(out, ds, enforce_file_format=True)
    else:
        del ds.file_meta
        ds.preamble = None
        pydicom.dcmwrite(out, ds, implicit_vr=False, little_endian=True)
    return out.getvalue()
