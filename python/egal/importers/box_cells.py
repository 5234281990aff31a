"""Parsing boxes written into one table cell, as annotation tables write them.

Accepted (a cell holds a list; "[]" or a missing-value cell (egal.importers.tables.cell_or_none) holds no box):
  [[x0, y0, x1, y1], ...]                         corner lists, JSON or Python literal
  [{'x': .., 'y': .., 'width': .., 'height': ..}]  SIIM-COVID-19's form: top-left corner and size
  [{'x0'|'x_min': .., 'y0'|'y_min': .., 'x1'|'x_max': .., 'y1'|'y_max': ..}]
Python literals are read with ast.literal_eval (never eval).
"""
from __future__ import annotations

import ast
import json

from ..pool.errors import RowError
from .tables import cell_or_none

CORNER_KEYS = (("x0", "y0", "x1", "y1"), ("x_min", "y_min", "x_max", "y_max"), ("xmin", "ymin", "xmax", "ymax"))


def parse_boxes(cell) -> list[list[float]]:
    """[[x0, y0, x1, y1], ...] from one cell; RowError naming what is wrong."""
    if cell is None or cell_or_none(str(cell)) is None or str(cell).strip() == "[]":
        return []
    text = str(cell).strip()
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):  # "{[1]: 2}", "[" * 5000
            raise RowError(f"boxes cell cannot be read as a list of boxes: {text[:60]!r}") from None
    if not isinstance(value, (list, tuple)):
        raise RowError(f"boxes cell is not a list: {text[:60]!r}")
    return [_one(box) for box in value]


def _one(box) -> list[float]:
    try:
        if isinstance(box, dict):
            if {"x", "y", "width", "height"} <= box.keys():
                x, y = float(box["x"]), float(box["y"])
                return [x, y, x + float(box["width"]), y + float(box["height"])]
            for keys in CORNER_KEYS:
                if set(keys) <= box.keys():
                    return [float(box[k]) for k in keys]
            raise RowError(f"box {box!r} has none of the key sets x/y/width/height or x0/y0/x1/y1")
        if len(box) != 4:
            raise RowError(f"box {list(box)!r} does not hold 4 numbers [x0, y0, x1, y1]")
        return [float(v) for v in box]
    except RowError:
        raise
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float's range
        shown = repr(box) if len(repr(box)) <= 80 else repr(box)[:77] + "..."
        raise RowError(f"box {shown} holds something that is not a number") from None
