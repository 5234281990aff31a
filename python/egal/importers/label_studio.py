"""Label Studio's import files: tasks JSON with the ROI as a prediction (pre-annotation), and a labelling config.

Followed: Label Studio 1.x documentation, "Import pre-annotated data" and "Label Studio JSON
format" (label-studio 1.23 is current on PyPI): a task is {"data": {...}, "predictions": [{"model_version",
"result": [...]}]}; a box is a `rectanglelabels` result whose x, y, width, height are percentages
of the image's original_width / original_height; a mask is a `brushlabels` result with
value {"format": "rle", "rle": [...]}, Label Studio's brush RLE: the RGBA pixels (4 bytes per
pixel, row-major) packed by thi.ng's rle-pack, which `brush_rle` writes (the decoder is
label_studio_converter.brush.decode_rle).
"""
from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

FROM_BOXES, FROM_MASK, FROM_CLASS = "roi", "roi_mask", "label"
RLE_SIZES = (3, 6, 10, 16)  # bits for a run length, chosen per run by a 2-bit index
WORD_BITS = 8


def rectangle(box: Sequence[float], width: int, height: int, roi_label: str, index: int) -> dict:
    x0, y0, x1, y1 = (float(v) for v in box)
    return {"id": f"roi{index}", "from_name": FROM_BOXES, "to_name": "image", "type": "rectanglelabels",
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"x": 100.0 * x0 / width, "y": 100.0 * y0 / height, "width": 100.0 * (x1 - x0) / width,
                      "height": 100.0 * (y1 - y0) / height, "rotation": 0, "rectanglelabels": [roi_label]}}


def brush(mask: np.ndarray, roi_label: str) -> dict:
    height, width = mask.shape
    return {"id": "roi_mask", "from_name": FROM_MASK, "to_name": "image", "type": "brushlabels",
            "original_width": int(width), "original_height": int(height), "image_rotation": 0,
            "value": {"format": "rle", "rle": brush_rle(mask), "brushlabels": [roi_label]}}


def task(image_url: str, data: dict[str, object], results: list[dict]) -> dict:
    entry = {"data": {"image": image_url, **data}}
    if results:
        entry["predictions"] = [{"model_version": "egal-roi", "result": results}]
    return entry


def label_config(classes: Sequence[str], roi_kind: str, roi_label: str) -> str:
    """The project's labelling interface: the image, a single choice of class, and the ROI control."""
    lines = ["<View>", '  <Image name="image" value="$image" zoom="true"/>']
    if classes:
        lines.append(f'  <Choices name="{FROM_CLASS}" toName="image" choice="single" showInline="true">')
        lines += [f"    <Choice value={quoteattr(str(c))}/>" for c in classes]
        lines.append("  </Choices>")
    if roi_kind == "boxes":
        lines.append(f'  <RectangleLabels name="{FROM_BOXES}" toName="image"><Label value={quoteattr(roi_label)}/>'
                     "</RectangleLabels>")
    elif roi_kind == "mask":
        lines.append(f'  <BrushLabels name="{FROM_MASK}" toName="image"><Label value={quoteattr(roi_label)}/>'
                     "</BrushLabels>")
    return "\n".join(lines + ["</View>", ""])


def brush_rle(mask: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of a [H, W] mask: RGBA bytes (255 inside, 0 outside), every run written as
    a repeat (rle-pack: 32-bit count, 5-bit word size - 1, four 4-bit run-length sizes - 1, then per run a
    1 bit, a 2-bit size index, the run length - 1 and the 8-bit value), zero-padded to whole bytes."""
    values = np.repeat(np.where(np.asarray(mask) != 0, 255, 0).astype(np.uint8).ravel(), 4)
    bits: list[str] = [format(values.size, "032b"), format(WORD_BITS - 1, "05b")]
    bits += [format(size - 1, "04b") for size in RLE_SIZES]
    if values.size:
        edges = np.flatnonzero(np.diff(values)) + 1
        starts = np.concatenate([[0], edges])
        lengths = np.diff(np.concatenate([starts, [values.size]]))
        longest = 1 << RLE_SIZES[-1]
        for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
            word = format(int(values[start]), f"0{WORD_BITS}b")
            while length > 0:
                n = min(length, longest)
                index = next(i for i, size in enumerate(RLE_SIZES) if n - 1 < (1 << size))
                bits.append("1" + format(index, "02b") + format(n - 1, f"0{RLE_SIZES[index]}b") + word)
                length -= n
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    return [int(stream[i:i + 8], 2) for i in range(0, len(stream), 8)]
