"""16-bit colour PNG samples at full depth.

Pillow reads a 16-bit RGB, RGBA or grey-and-alpha PNG at 8 bits per channel, keeping the
high byte of each sample: a mask whose ROI is drawn in values below 256 (label maps are
often 1, 2, 3) would read as empty, and an alpha below 256 as transparent. Pillow's own
PNG decoder (decompression, unfiltering, interlacing) is reused for the missing byte by
decoding the same data a second time with an unpacker that keeps the other byte of each
sample; only the unpacking differs, so both decodes see the same filtered bytes.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import RowError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COLOUR_16BIT = {2: "RGB;16B", 4: "LA;16B", 6: "RGBA;16B"}  # PNG colour type -> Pillow's raw mode for it


def png_header(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's header (IHDR, always the first chunk); None for other bytes."""
    if len(data) > 25 and data.startswith(PNG_MAGIC) and data[12:16] == b"IHDR":
        return data[24], data[25]
    return None


def full_depth_colour(data: bytes, image: Image.Image, reopen) -> np.ndarray | None:
    """[h, w, C] uint16 samples (C = 3 RGB, 2 grey + alpha, 4 RGBA) of a 16-bit colour or grey-and-alpha PNG,
    `image` being Pillow's loaded 8-bit reading of `data` and `reopen()` a fresh, unloaded Image.open of it;
    None for any other PNG (8-bit, palette, or 16-bit grey, which Pillow keeps whole as I;16)."""
    header = png_header(data)
    if header is None or header[0] != 16 or header[1] not in COLOUR_16BIT:
        return None
    other = reopen()
    tiles = other.tile
    if len(tiles) != 1 or tiles[0][3] != COLOUR_16BIT[header[1]] or not hasattr(other, "_mode"):
        raise RowError(f"a 16-bit {other.mode} PNG that this Pillow ({Image.__version__}) does not read the way egal "
                       "expects; save it with 8 bits per channel, or as 16-bit greyscale")
    if header[1] == 4:
        # No unpacker keeps the low bytes of grey + alpha, but its 4 bytes per pixel unpack as RGBA bytes whole.
        other._mode = "RGBA"
        other.tile = [_with_raw_mode(tiles[0], "RGBA")]
        raw = np.asarray(other).astype(np.uint16)  # [h, w, 4]: grey high, grey low, alpha high, alpha low
        return raw[..., 0::2] << 8 | raw[..., 1::2]
    other.tile = [_with_raw_mode(tiles[0], tiles[0][3].replace(";16B", ";16L"))]  # the other byte of each sample
    high = np.asarray(image).astype(np.uint16)
    low = np.asarray(other).astype(np.uint16)
    return high << 8 | low


def _with_raw_mode(tile, raw_mode: str):
    """A decoder tile (codec, extents, offset, raw mode) with another raw mode (a named tuple from Pillow 11)."""
    return tile._replace(args=raw_mode) if hasattr(tile, "_replace") else (*tile[:3], raw_mode)
