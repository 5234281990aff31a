"""Turning one row's expert ROI (PNG mask or pixel boxes) into a 0/1 mask on the mask grid.

Masks: a PNG of any size (not JPEG: lossy edges would invent ROI pixels); nonzero
pixels (in any colour channel) are the ROI, as the mask is shown (its EXIF orientation, if any, applied:
egal.pool.orientation). In a mask that is partly transparent (an
overlay exported by an annotation tool: an alpha channel, a palette or a colour key), a
transparent pixel is never ROI, whatever colour it hides; one whose every drawn pixel is
black, or that is transparent everywhere over nonzero colour, is a row error (the drawing
may be the ROI, or the mask empty). It is resized to the
mask grid by nearest neighbour, source index floor((i + 0.5) * in / out) (Pillow's
NEAREST rule). A mask whose width/height ratio differs from the image's by more
than 2 % cannot belong to that image and is a row error.

Boxes: each [x0, y0, x1, y1] in the image's own pixel coordinates must satisfy
0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height (else a row error naming the box).
They are scaled by (Wm / width, Hm / height) and rasterised with docs/scoring.md's rule:
pixel (y, x) is ROI when its centre (x + 0.5, y + 0.5) lies in the half-open
[x0, x1) x [y0, y1) of any box.

Null ROI values, empty box lists and all-zero masks all mean "no ROI": an all-zero
mask (docs/scoring.md's empty-ROI rule applies downstream).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from PIL import UnidentifiedImageError

from .errors import RoiMisfit, RowError
from .orientation import as_shown, exif_orientation, turned_note
from .png16 import PNG_MAGIC, full_depth_colour, png_header

ASPECT_TOLERANCE = 0.02


def read_mask_png(data: bytes) -> np.ndarray:
    """[h, w] bool, nonzero pixels of a PNG; RowError otherwise."""
    if len(data) == 0:
        raise RowError("empty (0 bytes)")
    data = bytes(data)
    from .images import open_pillow  # images imports this module

    try:
        image = open_pillow(data, ("PNG",), "mask")
        orientation = exif_orientation(image)
        image.load()
    except RowError:
        raise
    except UnidentifiedImageError:
        if data.startswith(PNG_MAGIC):
            raise RowError(f"corrupt or truncated PNG ({len(data)} bytes)") from None
        raise RowError(f"not a PNG image ({describe_bytes(data)}); masks must be PNG: nonzero pixels are the ROI, "
                       "and a lossy format such as JPEG would invent ROI pixels at its edges") from None
    except Exception as exc:  # a truncated or corrupt PNG
        raise RowError(f"corrupt PNG: {_without_stream_repr(exc)}") from exc
    samples = full_depth_colour(data, image, lambda: open_pillow(data, ("PNG",), "mask"))
    colour, drawn = _colour_and_drawn(image, png_header(data)) if samples is None else _full_depth_colour_and_drawn(
        samples, image.info.get("transparency"))
    return as_shown(_visible_roi(colour, drawn), orientation)


def _visible_roi(colour: np.ndarray, drawn: np.ndarray | None) -> np.ndarray:
    """[h, w] bool ROI from the colour and transparency of a mask's pixels; RowError when ambiguous."""
    if drawn is None or drawn.all():  # no transparency
        return colour
    if not drawn.any():  # nothing drawn: an empty overlay, unless colour hides under it
        if colour.any():
            raise RowError("mask is transparent everywhere but hides nonzero colour: it is unclear whether it is an "
                           "empty overlay or an ROI saved with a cleared alpha channel; save it without transparency "
                           "(nonzero = ROI)")
        return colour
    roi = colour & drawn  # a transparent pixel is never ROI, whatever colour it hides
    if not roi.any():
        raise RowError("mask has transparent pixels and every pixel drawn on it is black: it is unclear whether the "
                       "drawing is the ROI or an empty mask; save it without transparency (nonzero = ROI)")
    return roi


def _colour_and_drawn(image, header: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """[h, w] bool: nonzero in any colour channel; [h, w] bool: drawn (alpha > 0), None without transparency.
    Transparency is an alpha channel, a palette's transparent entries, or a colour key (PNG tRNS)."""
    bit_depth = header[0] if header else None
    pixels = np.asarray(image)  # 16-bit grey (I;16) keeps its values; 16-bit colour is read by png16
    colour = (pixels != 0).any(axis=-1) if pixels.ndim == 3 else pixels != 0
    key = image.info.get("transparency")
    if key is not None and image.mode == "L" and bit_depth in (2, 4):  # Pillow scales such samples, not the key
        return colour, pixels != key * (255 // (2**bit_depth - 1))
    if image.mode in ("LA", "PA", "RGBA", "P") or (key is not None and image.mode in ("1", "L", "RGB")):
        with_alpha = np.asarray(image.convert("LA" if image.mode in ("1", "L", "LA") else "RGBA"))  # applies a key
        if image.mode in ("LA", "PA", "RGBA", "P"):  # the colour channels, not the alpha; a palette's colours
            colour = (with_alpha[..., :-1] != 0).any(axis=-1)
        return colour, with_alpha[..., -1] > 0
    if key is not None and pixels.ndim == 2:  # 16-bit grey with a colour key, compared at full depth
        return colour, pixels != key
    return colour, None


def _full_depth_colour_and_drawn(samples: np.ndarray, key) -> tuple[np.ndarray, np.ndarray | None]:
    """_colour_and_drawn for [h, w, C] 16-bit samples: RGB (a colour key of three 16-bit values, as Pillow reads
    the tRNS chunk), grey + alpha, or RGBA."""
    channels = samples.shape[-1]
    if channels == 3:
        drawn = None if key is None else (samples != np.asarray(key, dtype=np.uint16)).any(axis=-1)
        return samples.any(axis=-1), drawn
    return samples[..., :-1].any(axis=-1), samples[..., -1] > 0


SIGNATURES = (  # leading bytes -> what a file starting with them is
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"), (b"GIF89a", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"PK\x03\x04", "a ZIP archive (an .npz?)"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"%PDF", "a PDF document"),
)


def describe_bytes(data: bytes) -> str:
    """What some bytes look like, for a message: their format when recognisable, else their first bytes."""
    for magic, what in SIGNATURES:
        if data.startswith(magic):
            return f"the bytes are {what}"
    if len(data) > 132 and data[128:132] == b"DICM":
        return "the bytes are a DICOM file"
    return f"{len(data)} bytes in no known image format, starting {data[:8].hex(' ')}"


def _without_stream_repr(exc: Exception) -> str:
    """Pillow's message, without the '<_io.BytesIO object at 0x...>' it names its input by."""
    return re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(exc)).strip() or type(exc).__name__


def check_aspect(mask_hw: tuple[int, int], image_hw: tuple[int, int], orientation: int = 1) -> None:
    """image_hw as the image is shown, under its EXIF `orientation` (named in the message when not 1)."""
    mask_ratio = mask_hw[1] / mask_hw[0]
    image_ratio = image_hw[1] / image_hw[0]
    if abs(mask_ratio / image_ratio - 1.0) > ASPECT_TOLERANCE:
        raise RoiMisfit(
            f"aspect ratio {mask_ratio:.2f} ({mask_hw[1]}x{mask_hw[0]}) does not match "
            f"the image's {image_ratio:.2f} ({image_hw[1]}x{image_hw[0]}){turned_note(orientation)}"
        )


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[h, w] -> [H, W] uint8 0/1, nearest neighbour; an ROI that nearest neighbour would lose entirely (smaller
    than a cell of the new grid, between its sample points) keeps the cells it touches, so that a small lesion
    never turns into "no ROI"."""
    height, width = size
    rows = np.minimum(((np.arange(height) + 0.5) * mask.shape[0] / height).astype(np.int64), mask.shape[0] - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * mask.shape[1] / width).astype(np.int64), mask.shape[1] - 1)
    resized = mask[rows[:, None], cols[None, :]].astype(np.uint8)
    if not resized.any() and mask.any():
        ys, xs = np.nonzero(mask)
        resized[(ys * height) // mask.shape[0], (xs * width) // mask.shape[1]] = 1
    return resized


def mask_from_png(data: bytes, image_hw: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """[H, W] uint8 0/1 from PNG bytes, checked against the image's aspect ratio."""
    mask = read_mask_png(data)
    check_aspect(mask.shape, image_hw)
    return resize_nearest(mask, size)


def mask_from_boxes(boxes: Sequence, image_hw: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """[H, W] uint8 0/1 from boxes in image pixel coordinates."""
    image_h, image_w = image_hw
    height, width = size
    mask = np.zeros(size, dtype=np.uint8)
    centres_x = np.arange(width) + 0.5
    centres_y = np.arange(height) + 0.5
    sx, sy = width / image_w, height / image_h
    for k, box in enumerate(boxes):
        x0, y0, x1, y1 = check_box(k, box, image_w, image_h)
        inside_x = (centres_x >= x0 * sx) & (centres_x < x1 * sx)  # [W]
        inside_y = (centres_y >= y0 * sy) & (centres_y < y1 * sy)  # [H]
        # A box narrower than a cell, between two centres, keeps the column (row) of its centre: it never vanishes.
        if not inside_x.any():
            inside_x = np.arange(width) == min(int((x0 + x1) / 2 * sx), width - 1)
        if not inside_y.any():
            inside_y = np.arange(height) == min(int((y0 + y1) / 2 * sy), height - 1)
        mask |= (inside_y[:, None] & inside_x[None, :]).astype(np.uint8)
    return mask


def check_box(k: int, box, image_w: int, image_h: int, orientation: int = 1) -> tuple[float, float, float, float]:
    """Box k of an image as four floats; RowError saying what is wrong with it (the rule every reader of
    boxes applies)."""
    if box is None:
        raise RowError(f"box {k} is null")
    if len(box) != 4:
        raise RowError(f"box {k} has {len(box)} numbers, expected 4 [x0, y0, x1, y1]")
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in box):
        raise RowError(f"box {k} {_show(box)} holds a null or NaN")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x0 < x1 and y0 < y1):
        raise RowError(f"box {k} {_show(box)} is empty or inverted (needs x0 < x1 and y0 < y1)")
    if not (0 <= x0 and x1 <= image_w and 0 <= y0 and y1 <= image_h):
        raise RoiMisfit(f"box {k} {_show(box)} lies outside the {image_w}x{image_h} image{turned_note(orientation)}")
    return x0, y0, x1, y1


def _show(box) -> str:
    def one(v):
        if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:  # 1e300 stays 1e+300, not 301 digits
            return str(int(v))
        return str(v)

    return "[" + ", ".join(one(v) for v in box) + "]"
