"""JSON that strict parsers read (JavaScript's JSON.parse, jq, most non-Python readers).

Python writes a float that is not finite as the bare word NaN or Infinity, which is not JSON.
Metrics are NaN by definition in places (a Dice over a test set without any ROI, an AUC with one
class present): they are written as null, which every reader in egal takes back as NaN.
"""
from __future__ import annotations

import json
import math


def strict(value):
    """`value` with every non-finite float (numpy's included) replaced by None, lists and dicts walked."""
    if isinstance(value, float):  # numpy.float64 is a float subclass
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if hasattr(value, "dtype") and getattr(value, "shape", None) == ():  # a numpy scalar other than float64
        return strict(value.item())
    return value


def dump(value, f, **kwargs) -> None:
    """json.dump of `value` as strict JSON (non-finite floats as null)."""
    json.dump(strict(value), f, allow_nan=False, **kwargs)


def nan_for_null(value):
    """The inverse of strict() for records of numbers: every None (null) in lists and dicts is NaN again."""
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: nan_for_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_for_null(v) for v in value]
    return value
