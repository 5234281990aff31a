"""How large an image egal decodes.

A PNG of a few hundred kilobytes can hold 12,000 x 12,000 pixels, and a deflated
DICOM of 125 KB 8,000 x 8,000: decoding either costs gigabytes (a float32 copy per
step, per channel, per decoder process) before the image is shrunk to the model's
input. Pillow's own guard only warns below 179 million pixels, and DICOM has none.
So every image and mask is checked against MAX_PIXELS from its header, before its
pixels are decoded: 40 million pixels is above any radiograph, mammogram or slice
egal is meant for (a 4,096 x 5,120 mammogram is 21 million) and bounds the cost of
one image to about a gigabyte. A deflated DICOM's data set is inflated in counted
pieces first, since pydicom inflates it whole before its header can be read
(egal.pool.dicom.check_inflated_size).
"""
from __future__ import annotations

from .errors import RowError

MAX_PIXELS = 40_000_000


def check_pixels(width: int, height: int, what: str = "image") -> None:
    """RowError when a `width` x `height` image is larger than egal decodes."""
    if width * height > MAX_PIXELS:
        raise RowError(f"{what} is {width} x {height} pixels ({width * height / 1e6:.0f} million), above the "
                       f"{MAX_PIXELS / 1e6:.0f} million egal decodes (egal.pool.limits): refused unread, as a possible "
                       "decompression bomb; downscale it when building the pool")
