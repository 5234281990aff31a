"""Decoding one DICOM image to floats in [0, 1].

Rules, in order:
  1. one frame only (multi-frame files are a row error);
  2. the stored values are decoded by pydicom; a compressed transfer syntax that
     pydicom cannot decode without a plugin (JPEG 2000, JPEG-LS, ... without
     pylibjpeg / GDCM) is a row error naming the transfer syntax;
  3. greyscale (MONOCHROME1 / MONOCHROME2): the Modality LUT (Rescale Slope /
     Intercept, or a Modality LUT Sequence) is applied, then the VOI LUT or window
     (Window Center / Width) when the file has one; MONOCHROME1 (bright = low values)
     is inverted; then the values are min-max scaled to [0, 1] (a constant image
     becomes all zeros);
  4. colour (RGB, or YBR converted to RGB by pydicom): each sample divided by
     2**BitsStored - 1.
Other photometric interpretations (PALETTE COLOR, ...) are a row error.
"""
from __future__ import annotations

import re
import warnings
import zlib
from io import BytesIO

import numpy as np

from .errors import RowError
from .limits import MAX_PIXELS, check_pixels

DICOM_MAGIC_OFFSET = 128
DICOM_MAGIC = b"DICM"
# What a data set within egal's pixel limit inflates to at most: three 16-bit samples a pixel (240 MB), and headers.
MAX_INFLATED_BYTES = 256 * 2**20
INFLATE_PIECE = 16 * 2**20


def has_dicom_magic(data: bytes) -> bool:
    return data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] == DICOM_MAGIC


def may_be_bare_dicom(data: bytes) -> bool:
    """A DICOM data set written without the 128-byte preamble starts with a group 0002 or 0008 tag."""
    return data[:2] in (b"\x02\x00", b"\x08\x00")


def read_dicom(data: bytes) -> np.ndarray:
    """[h, w] (grey) or [h, w, 3] (colour) float32 in [0, 1]; RowError with the reason otherwise."""
    try:
        return _read_dicom(data)
    except MemoryError:
        raise
    except RowError as exc:  # pydicom's own messages span lines (a list of missing plugins) and name objects
        raise RowError(one_line(str(exc))) from exc
    except Exception as exc:  # a malformed element read on the way (NumberOfFrames 'ab'): this file's error
        raise RowError(one_line(f"unreadable DICOM: {type(exc).__name__}: {exc}")) from exc


def checked_layout(ds) -> tuple[int, int, str]:
    """(width, height, photometric interpretation) of a data set whose pixels read_dicom would decode, read from
    its header alone; RowError for what it refuses there: several frames, no usable Rows / Columns, more pixels
    than egal decodes (checked before decoding: a deflated 125 KB file can hold 8,000 x 8,000 of them), or a
    photometric interpretation other than MONOCHROME1/2, RGB and the YBR family. Shared by read_dicom and the
    importers' header reader, so that both refuse the same files."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise RowError(f"multi-frame DICOM ({frames} frames) is not supported")
    try:
        width, height = int(ds.Columns), int(ds.Rows)
    except (AttributeError, TypeError, ValueError) as exc:
        raise RowError(f"DICOM file has no usable Rows / Columns ({exc})") from exc
    check_pixels(width, height, "DICOM image")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if not (photometric in ("MONOCHROME1", "MONOCHROME2", "RGB") or photometric.startswith("YBR")):
        raise RowError(f"DICOM photometric interpretation {photometric!r} is not supported (MONOCHROME1/2, RGB, "
                       "YBR)")
    return width, height, photometric


def one_line(message: str) -> str:
    """A decoder's message as one line of a row's error: newlines and tabs folded, Python object addresses
    ('<_io.BytesIO object at 0x7f...>') dropped."""
    message = re.sub(r"<[\w.]+ object at 0x[0-9a-fA-F]+>", "", message)  # (linear: no leading \s* to retry)
    return " ".join(message.split())


def _read_dicom(data: bytes) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    force = not has_dicom_magic(data)
    check_inflated_size(data, force)
    try:
        ds = pydicom.dcmread(BytesIO(data), force=force)
    except MemoryError:  # passed on as itself (its callers name it), not as "unreadable DICOM"
        raise
    except Exception as exc:  # pydicom raises many kinds for broken files
        raise RowError(f"unreadable DICOM: {exc}") from exc
    if "PixelData" not in ds:
        raise RowError("DICOM file has no pixel data")
    _, _, photometric = checked_layout(ds)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None:
        _assume_syntax_from_encoding(ds)
    try:
        stored = ds.pixel_array
    except MemoryError:
        raise
    except Exception as exc:
        if syntax is not None and getattr(syntax, "is_compressed", False):
            raise RowError(
                f"DICOM transfer syntax {syntax.name} ({syntax}) cannot be decoded here "
                f"(it needs a pydicom pixel-data plugin such as pylibjpeg or GDCM): {exc}"
            ) from exc
        raise RowError(f"DICOM pixel data cannot be decoded: {exc}") from exc
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if stored.ndim != 2:
            raise RowError(f"DICOM {photometric} pixel data has shape {stored.shape}, expected rows x columns")
        try:
            values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
            with warnings.catch_warnings():  # float input is what egal passes on purpose (the modality LUT's
                # output, exactly); pydicom's caution about float LUT indices printed once per row
                warnings.filterwarnings("ignore", message="Applying a VOI LUT on a float input array")
                values = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
        except MemoryError:
            raise
        except Exception as exc:  # a window width of 0, a malformed LUT: pydicom raises several kinds
            raise RowError(f"unreadable DICOM: its rescale or window cannot be applied ({exc})") from exc
        if photometric == "MONOCHROME1":
            values = -values
        return _min_max(values)
    if stored.ndim != 3 or stored.shape[-1] != 3:  # RGB or YBR (checked_layout)
        raise RowError(f"DICOM {photometric} pixel data has shape {stored.shape}, expected rows x columns x 3")
    bits = int(ds.get("BitsStored", 8))
    return np.clip(stored.astype(np.float32) / float(2**bits - 1), 0.0, 1.0)


HEADER_SEARCH_BYTES = 1 << 16  # the file meta and command set of any real DICOM fit well within this
# pydicom's private readers of the file meta and the command set, which its read_partial calls in this order
PYDICOM_HEADER_READERS = ("_read_file_meta_info", "_read_command_set_elements")


def check_inflated_size(data: bytes, force: bool) -> None:
    """RowError when a deflated data set inflates beyond MAX_INFLATED_BYTES.

    pydicom inflates a deflated data set whole before its Rows and Columns can be read (a 125 KB file can
    hold gigabytes), so it is inflated here first in pieces that are counted and dropped."""
    start = _deflated_data_start(data, force)
    if start is None:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    pending, total = memoryview(data)[start:], 0
    try:
        while not inflater.eof:
            produced = len(inflater.decompress(pending, INFLATE_PIECE))
            total += produced
            if total > MAX_INFLATED_BYTES:
                raise RowError(f"deflated DICOM data set inflates to more than {MAX_INFLATED_BYTES >> 20} MiB, "
                               f"above what an image of {MAX_PIXELS / 1e6:.0f} million pixels needs "
                               "(egal.pool.limits): refused, as a possible decompression bomb")
            pending = inflater.unconsumed_tail
            if not pending and not produced:
                break  # cut short: pydicom says what is wrong with it
    except zlib.error as exc:
        raise RowError(f"unreadable DICOM: its deflated data set is corrupt ({exc})") from None


def _deflated_data_start(data: bytes, force: bool) -> int | None:
    """Where a deflated data set starts, found by the very steps pydicom's reader takes before it inflates (its
    preamble, file meta and command set readers: any meta encoding, padded UIDs, no preamble); None when the
    data set is not deflated, or when those steps fail (pydicom then fails the same way, before inflating)."""
    from pydicom import filereader
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    read_meta, read_command_set = (getattr(filereader, name, None) for name in PYDICOM_HEADER_READERS)
    if read_meta is None or read_command_set is None:  # a pydicom whose readers moved: fail safe, not open
        if DeflatedExplicitVRLittleEndian.encode() in data[:HEADER_SEARCH_BYTES]:
            import pydicom

            raise RowError(f"a deflated DICOM, which this pydicom ({pydicom.__version__}) gives egal no way to "
                           "inflate in bounded pieces: refused, as a possible decompression bomb")
        return None
    stream = BytesIO(data)
    try:
        filereader.read_preamble(stream, force)
        meta = read_meta(stream)
        read_command_set(stream)
        deflated = meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian  # (elements decode on access)
    except Exception:  # a broken header: dcmread says what is wrong with it
        return None
    return stream.tell() if deflated else None


def _assume_syntax_from_encoding(ds) -> None:
    """A data set without file meta (no preamble) is uncompressed; its encoding says which syntax."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    implicit, little = ds.original_encoding
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def _min_max(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if not np.isfinite(low) or not np.isfinite(high):
        raise RowError("DICOM pixel values are not finite")
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)
