"""Decoding one image (PNG, JPEG or DICOM bytes) to a float32 [C, H, W] array in [0, 1].

Rules:
  * DICOM is recognised by the "DICM" magic at byte 128 (or, failing that and
    Pillow not recognising the bytes, by a leading group 0002/0008 tag); see
    egal.pool.dicom for how its values are mapped to [0, 1].
  * PNG and JPEG are read by Pillow (no other format is accepted). 8-bit values are
    divided by 255, 16-bit PNG values (grey, or colour read at full depth by
    egal.pool.png16) by 65535.
    Palette and alpha images are converted to RGB / grey first (alpha dropped).
  * EXIF orientation (JPEG, or a PNG's eXIf) is applied: the image as viewers show it
    (egal.pool.orientation).
  * Channels: RGB becomes grey by Pillow's luminance (ITU-R 601-2:
    L = 0.299 R + 0.587 G + 0.114 B) when in_channels is 1; grey becomes RGB by
    replication when in_channels is 3.
  * Size: resized to input_size with Pillow's bilinear filter on float ('F' mode)
    images, so 16-bit and DICOM values keep their precision (Pillow's bilinear
    widens its support when shrinking, i.e. it anti-aliases).
"""
from __future__ import annotations

import contextlib
import warnings
from io import BytesIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from .dicom import has_dicom_magic, may_be_bare_dicom, read_dicom
from .errors import RowError
from .limits import check_pixels
from .orientation import as_shown, exif_orientation
from .png16 import full_depth_colour
from .rois import _without_stream_repr

IMAGE_FORMATS = ("PNG", "JPEG")
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def read_image(data: bytes, in_channels: int) -> np.ndarray:
    """[c, h, w] float32 in [0, 1] at the image's own size, c = 1 for grey images or when
    in_channels is 1, else 3 (grey is replicated only after resizing, by `to_channels`).
    RowError with the reason when the bytes cannot be decoded."""
    if data is None:
        raise RowError("missing (null)")
    if len(data) == 0:
        raise RowError("empty (0 bytes)")
    data = bytes(data)
    if has_dicom_magic(data):
        return _planes(read_dicom(data), in_channels)
    try:
        image = open_pillow(data, IMAGE_FORMATS, "image")
        orientation = exif_orientation(image)
        image.load()
    except UnidentifiedImageError as exc:
        if may_be_bare_dicom(data):
            return _planes(read_dicom(data), in_channels)
        raise RowError(unidentified_image_reason(data)) from exc
    except RowError:
        raise
    except Exception as exc:  # truncated or corrupt files raise OSError, SyntaxError, ValueError...
        raise RowError(f"corrupt image data: {_without_stream_repr(exc)}") from exc
    samples = full_depth_colour(data, image, lambda: open_pillow(data, IMAGE_FORMATS, "image"))
    if samples is not None:  # [h, w, C] 16-bit grey + alpha, RGB or RGBA: Pillow would keep 8 bits
        colour = samples[..., 0] if samples.shape[-1] == 2 else samples[..., :3]  # alpha dropped
        return as_shown(_planes(colour.astype(np.float32) / 65535.0, in_channels), orientation)
    return as_shown(_pillow_to_float(image, in_channels), orientation)


def unidentified_image_reason(data: bytes) -> str:
    """Why Pillow could not identify `data` as a PNG or JPEG: a JPEG of a kind it does not decode (12-bit,
    lossless, arithmetic-coded, JPEG-LS, an unusual number of components), or no image of the formats egal reads."""
    kind = _undecoded_jpeg_kind(bytes(data))
    if kind:
        return (f"cannot identify image file: {kind}, which is not decoded (8-bit baseline and progressive JPEG of 1, "
                "3 or 4 components are)")
    return "cannot identify image file (not PNG, JPEG or DICOM)"


JPEG_HEADER_BYTES = 16 << 20  # the segments before a frame header (Exif, ICC) fit well within this


def _undecoded_jpeg_kind(data: bytes) -> str | None:
    """The kind of JPEG `data` is, by its frame header, where Pillow does not decode it; None for anything that is
    not such a JPEG. The marker segments are walked from SOI to the frame header (bytes inside an Exif thumbnail
    or an ICC profile are never read as one), and the frame header must be self-consistent (its length that of
    its components), so that random bytes after FF D8 FF name no kind."""
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    data, pos = data[:JPEG_HEADER_BYTES], 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:  # padding after a segment, which decoders skip: on to the next marker
            pos = data.find(b"\xff", pos)
            if pos < 0:
                return None
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill bytes, a run of them at once
            pos = len(data) - len(data[pos + 1:].lstrip(b"\xff")) - 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # standalone markers
            pos += 2
            continue
        if marker == 0xDA:  # start of scan, and no frame header before it
            return None
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if length < 2:
            return None
        frame = 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)  # SOF0-SOF15
        if frame or marker == 0xF7:  # (0xF7: JPEG-LS's frame header)
            if pos + 10 > len(data):
                return None
            precision, components = data[pos + 4], data[pos + 9]
            if not 1 <= components <= 4 or length != 8 + 3 * components:
                return None  # not a frame header after all
            if marker == 0xF7:
                return "a JPEG-LS image"
            lossless = marker in (0xC3, 0xC7, 0xCB, 0xCF)
            if not (2 <= precision <= 16 if lossless else precision in (8, 12)):
                return None
            kinds = [f"{precision}-bit"] if precision != 8 else []
            kinds += ["lossless"] if lossless else []
            kinds += ["arithmetic-coded"] if marker >= 0xC9 else []
            if not kinds and components == 2:
                return "a JPEG of 2 components"
            if not kinds:
                return None
            text = ", ".join(kinds)
            return f"{'an' if text[0] in 'aeiou8' or text.startswith(('11-', '18-')) else 'a'} {text} JPEG"
        pos += 2 + length
    return None


def open_pillow(data: bytes, formats, what: str) -> Image.Image:
    """Image.open of `data`, its pixels not read yet, refused (RowError) when its header gives more pixels than
    egal decodes (egal.pool.limits); Pillow's own bomb warning is left to that check."""
    with quiet_pillow():
        try:
            image = Image.open(BytesIO(data), formats=formats)
        except Image.DecompressionBombError as exc:  # over Pillow's hard limit: no size to show but its message
            raise RowError(f"{what} is larger than egal decodes ({exc})") from None
    check_pixels(*image.size, what)
    return image


@contextlib.contextmanager
def quiet_pillow():
    """Pillow's warnings while it opens an image, which egal's own checks replace: its decompression-bomb warning
    (egal.pool.limits decides), and damaged EXIF (on stderr once per image; the orientation is then 1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")
        yield


def _pillow_to_float(image: Image.Image, in_channels: int) -> np.ndarray:
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        grey = np.asarray(image).astype(np.float32) / 65535.0  # [h, w]
        return _planes(np.clip(grey, 0.0, 1.0), in_channels)
    if mode in ("1", "L", "LA"):
        image = image.convert("L")
    elif mode != "RGB":
        image = image.convert("RGB")  # P, PA, RGBA, CMYK, YCbCr, ...
    if image.mode == "RGB" and in_channels == 1:
        image = image.convert("L")  # Pillow's luminance, rounded to 8 bits
    scaled = np.asarray(image).astype(np.float32) / 255.0  # [h, w] or [h, w, 3]
    return _planes(scaled, in_channels)


def _planes(pixels: np.ndarray, in_channels: int) -> np.ndarray:
    """[h, w] -> [1, h, w]; [h, w, 3] -> [3, h, w], or [1, h, w] by luminance when in_channels is 1."""
    if pixels.ndim == 2:
        return pixels[None].astype(np.float32, copy=False)
    if in_channels == 3:
        return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)
    return np.tensordot(LUMA, pixels.astype(np.float32), axes=([0], [2]))[None]  # colour DICOM -> grey


def to_channels(image: np.ndarray, in_channels: int) -> np.ndarray:
    """[1 or 3, H, W] -> [in_channels, H, W]: grey replicated to RGB when asked for."""
    if image.shape[0] == in_channels:
        return image
    return np.repeat(image, in_channels, axis=0)


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[C, h, w] -> [C, H, W] float32 with Pillow's bilinear filter in 'F' mode."""
    height, width = size
    if image.shape[1:] == (height, width):
        return image
    out = np.empty((image.shape[0], height, width), dtype=np.float32)
    for c in range(image.shape[0]):
        plane = Image.fromarray(np.ascontiguousarray(image[c], dtype=np.float32))  # mode F
        out[c] = np.asarray(plane.resize((width, height), Image.BILINEAR))
    return np.clip(out, 0.0, 1.0, out=out)
