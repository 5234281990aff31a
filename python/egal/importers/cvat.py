"""CVAT's import file: "CVAT for images 1.1" XML with the ROI as shapes; and its tags, read back.

Followed: CVAT's documentation "XML annotation format", version 1.1 (docs.cvat.ai; CVAT 2.x): an
<annotations> root with <version>1.1</version>, <meta><task> with the labels, then one <image id
name width height> per image holding <box xtl ytl xbr ybr> (pixels, top-left origin), <mask rle
left top width height> (run lengths over the mask's bounding box, row-major, alternating
background and mask and starting with background) and <tag> for an image-level class. Upload it
with "Upload annotations" > "CVAT 1.1" on a task created from the images folder (names match).
The file CVAT exports ("Export task dataset" > "CVAT for images 1.1") has the same layout: read_tags
reads each image's tags from it, which `egal pool add-labels` takes as the images' labels.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

import numpy as np


def header(size: int, roi_label: str, classes: Sequence[str], name: str = "egal selection") -> list[str]:
    labels = [f"      <label><name>{escape(roi_label)}</name><type>any</type><attributes/></label>"]
    labels += [f"      <label><name>{escape(str(c))}</name><type>tag</type><attributes/></label>" for c in classes]
    return ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "  <version>1.1</version>", "  <meta>",
            "    <task>", f"      <name>{escape(name)}</name>", f"      <size>{size}</size>",
            "      <mode>annotation</mode>", "      <overlap>0</overlap>", "      <labels>", *labels,
            "      </labels>", "    </task>", "  </meta>"]


def image(index: int, name: str, width: int, height: int, *, boxes: Iterable[Sequence[float]] = (),
          mask: np.ndarray | None = None, roi_label: str = "ROI", tag: str | None = None) -> list[str]:
    lines = [f"  <image id=\"{index}\" name={quoteattr(name)} width=\"{width}\" height=\"{height}\">"]
    for box in boxes:
        x0, y0, x1, y1 = (float(v) for v in box)
        lines.append(f"    <box label={quoteattr(roi_label)} source=\"auto\" occluded=\"0\" xtl=\"{x0:.2f}\" "
                     f"ytl=\"{y0:.2f}\" xbr=\"{x1:.2f}\" ybr=\"{y1:.2f}\" z_order=\"0\"></box>")
    if mask is not None and np.any(mask):
        rle, (left, top, w, h) = mask_rle(mask)
        lines.append(f"    <mask label={quoteattr(roi_label)} source=\"auto\" occluded=\"0\" rle=\"{rle}\" "
                     f"left=\"{left}\" top=\"{top}\" width=\"{w}\" height=\"{h}\" z_order=\"0\"></mask>")
    if tag is not None:
        lines.append(f"    <tag label={quoteattr(str(tag))} source=\"manual\"></tag>")
    return lines + ["  </image>"]


def footer() -> list[str]:
    return ["</annotations>", ""]


def mask_rle(mask: np.ndarray):
    """(run lengths as CVAT writes them, (left, top, width, height) of the mask's bounding box)."""
    mask = np.asarray(mask) != 0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, left = int(rows[0]), int(cols[0])
    crop = mask[top:rows[-1] + 1, left:cols[-1] + 1].ravel()
    edges = np.flatnonzero(np.diff(crop.astype(np.int8))) + 1
    runs = np.diff(np.concatenate([[0], edges, [crop.size]])).tolist()
    if crop[0]:
        runs = [0] + runs  # runs start with background
    return ", ".join(map(str, runs)), (left, top, int(cols[-1] + 1 - left), int(rows[-1] + 1 - top))


def read_tags(path) -> Iterator[tuple[str, list[str]]]:
    """(name, [label of each <tag>]) of every <image> of a "CVAT for images 1.1" file, in the file's order,
    streamed. ValueError naming the file when it is not XML or its root is not <annotations>."""
    try:
        events = ElementTree.iterparse(path, events=("start", "end"))
        _, root = next(events)
        if root.tag != "annotations":
            raise ValueError(f"{str(path)!r} is XML with the root <{root.tag}>, not a CVAT for images 1.1 file "
                             "(<annotations>)")
        for event, element in events:
            if event == "end" and element.tag == "image":
                yield element.get("name", ""), [t.get("label", "") for t in element.iter("tag")]
                root.clear()  # keeps memory flat however many images the task has
    except ElementTree.ParseError as exc:
        raise ValueError(f"{str(path)!r} is not a readable XML file: {exc}") from None
