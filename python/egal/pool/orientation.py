"""An image's EXIF orientation: egal uses images and masks as viewers show them.

A camera or a scanner may store the pixels sideways and record in EXIF (tag 0x0112, in a JPEG's
APP1 segment or a PNG's eXIf chunk) how to turn them for display; browsers, Label Studio and
CVAT show the turned image, and ROIs are drawn on what they show. So egal turns the pixels the
same way before anything else: decoded images and masks, and the width and height that boxes
and the mask aspect check refer to. Orientation 1 (or none, or an unreadable EXIF) is as stored;
2-8 mirror and/or rotate, 5-8 swapping width and height. Only EXIF that precedes the pixel
data counts (always so in JPEG; a PNG's eXIf must come before its IDAT), so that the header
alone gives the shown size.
"""
from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

ORIENTATION_TAG = 0x0112
SWAPS_SIDES = (5, 6, 7, 8)


def exif_orientation(image: Image.Image) -> int:
    """1-8, from the EXIF Pillow found while opening `image` (before its pixels); 1 without a usable one."""
    raw = image.info.get("exif")
    if not raw:
        return 1
    try:
        with warnings.catch_warnings():  # Pillow warns of damaged EXIF on stderr, once per image
            warnings.simplefilter("ignore")
            exif = Image.Exif()
            exif.load(raw)
            value = exif.get(ORIENTATION_TAG, 1)
    except Exception:  # a damaged EXIF block: the pixels are used as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


TURNS = {2: "mirrored left-right", 3: "upside down", 4: "mirrored top-bottom", 5: "transposed",
         6: "turned 90 degrees clockwise", 7: "transversed", 8: "turned 90 degrees anticlockwise"}


def turned_note(orientation: int) -> str:
    """For a message about an image's ROI: how the image is shown, when not as stored ('' otherwise)."""
    if orientation not in TURNS:
        return ""
    return (f" (the image is shown {TURNS[orientation]}, by its EXIF orientation {orientation}: egal reads ROIs on "
            "the image as shown)")


def orientation_of(data: bytes) -> int:
    """The EXIF orientation of PNG or JPEG bytes (1 for anything else), from the header alone."""
    from io import BytesIO

    from .images import quiet_pillow

    try:
        with quiet_pillow(), Image.open(BytesIO(bytes(data)), formats=("PNG", "JPEG")) as image:
            return exif_orientation(image)
    except Exception:  # not a PNG or JPEG (DICOM), or unreadable: the decoder has said so already
        return 1


def shown_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) of the image as shown."""
    return (height, width) if orientation in SWAPS_SIDES else (width, height)


def as_shown(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """[..., h, w] stored pixels -> [..., h', w'] as shown under `orientation` (EXIF's definition)."""
    if orientation <= 1:
        return pixels
    rows, cols = pixels.ndim - 2, pixels.ndim - 1
    turned = {  # as TURNS says
        2: lambda p: np.flip(p, cols),
        3: lambda p: np.rot90(p, 2, (rows, cols)),
        4: lambda p: np.flip(p, rows),
        5: lambda p: np.swapaxes(p, rows, cols),
        6: lambda p: np.rot90(p, -1, (rows, cols)),
        7: lambda p: np.swapaxes(np.rot90(p, 2, (rows, cols)), rows, cols),
        8: lambda p: np.rot90(p, 1, (rows, cols)),
    }[orientation](pixels)
    return np.ascontiguousarray(turned)
