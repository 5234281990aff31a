"""Decoding a RawBatch into model-ready arrays, one bad row never stopping the rest.

`decode_batch` is a top-level function of picklable arguments so that it can run
in worker processes. A row that cannot be decoded (corrupt bytes, an undecodable
DICOM, a box outside the image, a mask that does not fit the image) gets a short
reason in `errors` ("image: ...", "mask: ...", "boxes: ...") and zeros in
`images` and `masks`; the other rows are decoded exactly as without it.

How values are obtained: egal.pool.images (PNG, JPEG), egal.pool.dicom (DICOM),
egal.pool.rois (masks and boxes).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._checks import check_hw
from .batches import RawBatch
from .errors import PathRefused, RoiMisfit, RowError
from .images import read_image, resize_bilinear, to_channels
from .orientation import orientation_of, turned_note
from .paths import resolve_inside
from .rois import mask_from_boxes, mask_from_png

# Raised whenever the same bytes decode to other arrays (a changed rule in images, png16, orientation, dicom or
# rois), so that decoded arrays kept on disk (egal.loop.data's cache) are not reused across the change.
# 2: 16-bit colour PNG at full depth (and, before it, the transparency and deflated-DICOM rules of 2026-11-27);
# 3: EXIF orientation applied.
DECODE_RULES = 3


@dataclass(frozen=True)
class DecodeSettings:
    input_size: tuple[int, int]  # (H, W) of the model input
    in_channels: int = 1  # 1 (grey) or 3 (RGB)
    mask_size: tuple[int, int] | None = None  # (Hm, Wm) of the ROI grid; None: input_size

    def __post_init__(self):
        object.__setattr__(self, "input_size", check_hw(self.input_size, "input_size"))
        if self.in_channels not in (1, 3) or isinstance(self.in_channels, bool):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels!r}")
        if self.mask_size is not None:
            object.__setattr__(self, "mask_size", check_hw(self.mask_size, "mask_size"))

    @property
    def mask_hw(self) -> tuple[int, int]:
        return self.mask_size if self.mask_size is not None else self.input_size


@dataclass
class DecodedBatch:
    index: int
    start_row: int
    ids: list[str]
    images: np.ndarray  # [B, in_channels, H, W] float32 in [0, 1]; zeros on error rows
    masks: np.ndarray  # [B, Hm, Wm] uint8 0/1; zeros on error rows and rows without ROI
    has_roi: np.ndarray  # [B] bool: the mask has at least one ROI pixel
    errors: list[str | None]  # None, or why the row could not be decoded
    extra: dict[str, list] = field(default_factory=dict)
    rows: list[int] = field(default_factory=list)  # global row numbers

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def ok(self) -> np.ndarray:
        """[B] bool: rows decoded without error."""
        return np.array([e is None for e in self.errors], dtype=bool)


def decode_batch(raw: RawBatch, settings: DecodeSettings) -> DecodedBatch:
    """Decodes every row of `raw`; never raises for a bad row (see the module docstring)."""
    n = len(raw)
    height, width = settings.input_size
    images = np.zeros((n, settings.in_channels, height, width), dtype=np.float32)  # [B, C, H, W]
    masks = np.zeros((n, *settings.mask_hw), dtype=np.uint8)  # [B, Hm, Wm]
    errors: list[str | None] = [None] * n
    for i in range(n):
        try:
            image, mask = _decode_row(raw, i, settings)
        except RowError as exc:
            errors[i] = str(exc)
            continue
        images[i] = image
        if mask is not None:
            masks[i] = mask
    has_roi = masks.reshape(n, -1).any(axis=1)  # [B]
    return DecodedBatch(
        index=raw.index,
        start_row=raw.start_row,
        ids=list(raw.ids),
        images=images,
        masks=masks,
        has_roi=has_roi,
        errors=errors,
        extra=dict(raw.extra),
        rows=list(raw.rows),
    )


def _decode_row(raw: RawBatch, i: int, settings: DecodeSettings):
    """(image [C, H, W], mask [Hm, Wm] or None); RowError "<part>: <reason>" otherwise."""
    try:
        image_bytes = _load(raw.images[i], raw.image_is_path, raw.base_dirs[i])
        native = read_image(image_bytes, settings.in_channels)  # [c, h, w]
        image = to_channels(resize_bilinear(native, settings.input_size), settings.in_channels)
    except RowError as exc:
        raise RowError(f"image: {exc}") from exc
    except Exception as exc:  # an unforeseen decoder failure is still only this row's problem
        raise RowError(f"image: {type(exc).__name__}: {exc}") from exc
    roi = raw.rois[i]
    if raw.roi_kind is None or roi is None:
        return image, None
    image_hw = native.shape[1:]
    try:
        if raw.roi_kind == "boxes":
            mask = mask_from_boxes(roi, image_hw, settings.mask_hw)
        else:
            data = _load(roi, raw.roi_kind == "mask_path", raw.base_dirs[i])
            mask = mask_from_png(data, image_hw, settings.mask_hw)
    except RoiMisfit as exc:  # as an ROI drawn on the stored pixels of a turned image does: say it is turned
        raise RowError(f"{raw.roi_kind}: {exc}{turned_note(orientation_of(image_bytes))}") from exc
    except RowError as exc:
        raise RowError(f"{raw.roi_kind}: {exc}") from exc
    except Exception as exc:
        raise RowError(f"{raw.roi_kind}: {type(exc).__name__}: {exc}") from exc
    return image, mask


def _load(value, is_path: bool, base_dir: str):
    """The bytes of a value, reading the file when it is a path (which must stay inside base_dir)."""
    if not is_path or value is None:
        return value
    try:
        target = resolve_inside(base_dir, value)
    except PathRefused as exc:
        raise RowError(str(exc)) from exc
    try:
        with open(target, "rb") as f:
            return f.read()
    except OSError as exc:
        raise RowError(f"cannot read {value!r}: {exc}") from exc
