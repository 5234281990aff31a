"""Image facts and conversions the importers share: sizes and bit depths from headers, DICOM to PNG.

DICOM is converted with the pool decoder's own rules (egal.pool.dicom.read_dicom: Modality LUT,
VOI LUT or window, MONOCHROME1 inverted, min-max to [0, 1]), then stored as a 16-bit grey PNG,
so a converted pool scores as the DICOM would have, to within 1/65535, and a downscaled one
as the DICOM would after the same bilinear resize.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np

from ..pool.dicom import check_inflated_size, checked_layout, has_dicom_magic, may_be_bare_dicom, one_line, read_dicom
from ..pool.encode import encode_png
from ..pool.errors import RowError
from ..pool.images import quiet_pillow, read_image, resize_bilinear, unidentified_image_reason
from ..pool.limits import check_pixels
from ..pool.orientation import exif_orientation, shown_size
from ..pool.png16 import png_header

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "PNG", "JPEG" or "DICOM"
    width: int
    height: int
    bits: int  # bits per sample: 1, 8 or 16 (DICOM: BitsStored)
    channels: int  # 1 (grey) or 3 (colour)
    orientation: int = 1  # EXIF orientation (egal.pool.orientation): width and height are those shown


def read_header(data: bytes) -> ImageHeader:
    """The size and depth of PNG, JPEG or DICOM bytes without decoding the pixels; RowError otherwise."""
    data = bytes(data)
    if has_dicom_magic(data) or may_be_bare_dicom(data):
        return _dicom_header(data)
    from PIL import Image, UnidentifiedImageError

    try:
        with quiet_pillow(), Image.open(BytesIO(data), formats=("PNG", "JPEG")) as image:
            mode, fmt, depth = image.mode, image.format, png_header(data)
            orientation = exif_orientation(image)
            width, height = shown_size(*image.size, orientation)  # as decoded: EXIF orientation applied
    except UnidentifiedImageError:
        raise RowError(unidentified_image_reason(data)) from None
    except Exception as exc:  # truncated headers raise OSError, SyntaxError...
        raise RowError(f"unreadable image header: {exc}") from exc
    check_pixels(width, height)  # what egal score refuses unread, refused here too
    bits = 16 if mode.startswith("I;16") or mode == "I" or (depth and depth[0] == 16) else 1 if mode == "1" else 8
    grey_png = depth is not None and depth[1] in (0, 4)  # (Pillow opens 16-bit grey + alpha as RGBA)
    channels = 1 if mode in ("1", "L", "LA", "I", "F") or mode.startswith("I;16") or grey_png else 3
    # A camera JPEG that carries extra frames (MPO) is a JPEG whose first frame is the image egal decodes.
    return ImageHeader("JPEG" if fmt == "MPO" else fmt, width, height, bits, channels, orientation)


def _dicom_header(data: bytes) -> ImageHeader:
    """The header, with what egal score refuses there (a deflated bomb; egal.pool.dicom.checked_layout; a
    SamplesPerPixel other than 1 or 3) refused here too."""
    import pydicom

    force = not has_dicom_magic(data)
    check_inflated_size(data, force)  # before pydicom inflates a deflated data set, header and all
    try:
        ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, force=force)
        columns, rows, _ = checked_layout(ds)
        bits = int(ds.get("BitsStored", 8) or 8)
        samples = _samples_per_pixel(ds.get("SamplesPerPixel"))
    except RowError:
        raise
    except Exception as exc:  # pydicom raises many kinds for broken files; int() of an empty or odd element too
        raise RowError(one_line(f"unreadable DICOM header: {type(exc).__name__}: {exc}")) from exc
    return ImageHeader("DICOM", columns, rows, bits, samples)


def read_image_file(path) -> bytes:
    """The bytes of an image file; RowError for a FIFO, socket or device named like one (reading it could wait
    for ever). OSError as open raises it (a missing file, a dangling link)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise RowError("not a regular file (a FIFO, socket or device)")
    return Path(path).read_bytes()


def checked_header(data: bytes) -> ImageHeader:
    """read_header, once the pixels decode as egal score will decode them (egal.pool.images.read_image): a file
    whose header reads but whose pixels do not (truncated, no pixel data) is skipped at import, with its reason,
    instead of becoming a row that fails at every scoring."""
    header = read_header(data)
    try:
        read_image(data, header.channels)
    except RowError:
        raise
    except MemoryError as exc:  # as egal score has it: this row's (too large for this machine now), counted
        raise RowError(f"not enough memory to decode it ({exc})") from exc
    except Exception as exc:  # a decoder's own error (pydicom on a damaged element): this row's, as egal score has it
        raise RowError(f"pixels cannot be decoded: {type(exc).__name__}: {exc}") from exc
    return header


def _samples_per_pixel(raw) -> int:
    """(0028,0002) as 1 or 3, as pydicom decodes it; RowError naming the element otherwise (missing, empty,
    several values, 3.9)."""
    try:
        value = float(str(raw).strip()) if raw is not None else None
    except ValueError:
        value = None
    if value not in (1.0, 3.0):
        shown = "missing" if raw is None else repr(raw)
        raise RowError(f"DICOM element (0028,0002) SamplesPerPixel is {shown}: it must be 1 or 3")
    return int(value)


def fit_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept, so that the longer side is at most max_side (None/0: as is)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def dicom_to_png(data: bytes, max_side: int | None = None) -> tuple[bytes, tuple[int, int], tuple[int, int]]:
    """(PNG bytes, (width, height) of the DICOM, (width, height) of the PNG); RowError when it cannot be read.

    Grey DICOM becomes a 16-bit grey PNG, colour an 8-bit RGB one; max_side shrinks the longer side
    with the pool decoder's bilinear filter.
    """
    pixels = read_dicom(bytes(data))  # [h, w] or [h, w, 3] float32 in [0, 1]
    height, width = pixels.shape[:2]
    new_w, new_h = fit_size(width, height, max_side)
    planes = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    planes = resize_bilinear(np.ascontiguousarray(planes), (new_h, new_w))
    if planes.shape[0] == 1:
        encoded = encode_png(np.round(planes[0] * 65535.0).astype(np.uint16))
    else:
        encoded = encode_png(np.round(planes.transpose(1, 2, 0) * 255.0).astype(np.uint8))
    return encoded, (width, height), (new_w, new_h)


def scale_boxes(boxes: Sequence[Sequence[float]], source: tuple[int, int],
                target: tuple[int, int]) -> list[list[float]]:
    """Boxes in the pixel coordinates of a (width, height) image, in those of the same image resized to `target`."""
    if tuple(source) == tuple(target):
        return [list(map(float, b)) for b in boxes]
    sx, sy = target[0] / source[0], target[1] / source[1]
    # min(): rounding must not push a box that ended on the border past the resized image
    return [[b[0] * sx, b[1] * sy, min(b[2] * sx, float(target[0])), min(b[3] * sy, float(target[1]))] for b in boxes]


def encode_mask(mask: np.ndarray) -> bytes:
    """[h, w] bool/0-1 -> 8-bit PNG, 0 and 255 (nonzero is the ROI, as the pool format reads masks)."""
    return encode_png(np.where(np.asarray(mask) != 0, 255, 0).astype(np.uint8))


def suffix_of(data: bytes) -> str:
    """The file suffix for image bytes: .png, .jpg or .dcm (what an exported file is named)."""
    data = bytes(data[:132])
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if has_dicom_magic(data) or may_be_bare_dicom(data):
        return ".dcm"
    raise RowError(unidentified_image_reason(data))
