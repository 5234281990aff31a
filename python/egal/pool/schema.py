"""Which column plays which role in a pool, and whether its Arrow type fits that role.

Roles (see the pool format in egal.pool):
  id                    string, unique, non-null
  image | image_path    exactly one: binary image bytes, or a string path
  mask | mask_path | boxes
                        at most one ROI column: binary PNG, string path, or a list
                        of [x0, y0, x1, y1] number lists
  label                 optional, any type
Every other column is ignored unless asked for by name.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from .errors import PoolError

IMAGE_COLUMNS = ("image", "image_path")
# The column of the patient (or study) each row belongs to, where egal's importers write it; commands that cap or
# split by group read it by default (any other column can be named).
GROUP_COLUMN = "group"
ROI_COLUMNS = ("mask", "mask_path", "boxes")
PATH_COLUMNS = ("image_path", "mask_path")


@dataclass(frozen=True)
class PoolColumns:
    image_column: str  # "image" or "image_path"
    roi_column: str | None  # "mask", "mask_path", "boxes" or None

    @property
    def path_columns(self) -> tuple:
        """The columns whose values name files that must exist inside the pool's folders."""
        return tuple(c for c in (self.image_column, self.roi_column) if c in PATH_COLUMNS)


def _values(t: pa.DataType) -> pa.DataType:
    """A dictionary-encoded column (e.g. written from a pandas categorical) is judged by its values."""
    return t.value_type if pa.types.is_dictionary(t) else t


def _is_string(t: pa.DataType) -> bool:
    t = _values(t)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_binary(t: pa.DataType) -> bool:
    t = _values(t)
    return (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_binary_view(t)
        or pa.types.is_fixed_size_binary(t)
    )


def _is_list(t: pa.DataType) -> bool:
    return (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    )


def _is_box_list(t: pa.DataType) -> bool:
    """list<list<number>>, the inner list of length 4 when its type fixes a length.

    Variable-length inner lists are accepted here; a box that does not hold exactly
    four numbers is a row error at decode time (content, not schema).
    """
    if not _is_list(t) or not _is_list(t.value_type):
        return False
    inner = t.value_type
    if pa.types.is_fixed_size_list(inner) and inner.list_size != 4:
        return False
    return pa.types.is_integer(inner.value_type) or pa.types.is_floating(inner.value_type)


def resolve_columns(schema: pa.Schema, where: str) -> PoolColumns:
    """The roles of a pool's columns; PoolError naming the column when one does not fit."""
    names = schema.names  # (unique: column_types checked each file's)
    if "id" not in names:
        raise PoolError(f"{where}: no 'id' column (columns: {names})")
    images = [c for c in IMAGE_COLUMNS if c in names]
    if len(images) != 1:
        what = "neither" if not images else "both"
        raise PoolError(f"{where}: needs exactly one of 'image' (bytes) or 'image_path' (string), found {what}")
    rois = [c for c in ROI_COLUMNS if c in names]
    if len(rois) > 1:
        raise PoolError(f"{where}: at most one ROI column is allowed, found {rois}")

    def check(column: str, ok, expected: str) -> None:
        actual = schema.field(column).type
        if not ok(actual):
            raise PoolError(f"{where}: column {column!r} must be {expected}, its Arrow type is {actual}")

    check("id", _is_string, "a string")
    if images[0] == "image":
        check("image", _is_binary, "binary (PNG, JPEG or DICOM bytes)")
    else:
        check("image_path", _is_string, "a string (a path relative to the Parquet file's folder)")
    roi = rois[0] if rois else None
    if roi == "mask":
        check("mask", _accepts_null(_is_binary), "binary (PNG bytes)")
    elif roi == "mask_path":
        check("mask_path", _accepts_null(_is_string), "a string (a path relative to the Parquet file's folder)")
    elif roi == "boxes":
        check("boxes", _accepts_null(_is_box_list), "a list of [x0, y0, x1, y1] number lists")
    return PoolColumns(image_column=images[0], roi_column=roi)


def column_types(schema: pa.Schema, where: str) -> dict:
    """{name: type}: what must agree between the files of one pool (order and metadata may differ); PoolError
    when a name appears twice (a dict would keep one of them, and reading the column by name fails)."""
    names = schema.names
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise PoolError(f"{where}: column name(s) {duplicated} appear more than once")
    return {f.name: f.type for f in schema}


def merge_column_types(expected: dict, actual: dict) -> tuple:
    """(merged {name: type}, "" ) when two files agree, else (None, what differs).

    A column of Arrow type `null` (every value null, as writers infer for an
    all-None column, e.g. a file whose rows have no ROI) agrees with any type.
    """
    missing = [c for c in expected if c not in actual]
    extra = [c for c in actual if c not in expected]
    merged, changed = {}, []
    for name, want in expected.items():
        have = actual.get(name, want)
        if have == want or pa.types.is_null(have):
            merged[name] = want
        elif pa.types.is_null(want):
            merged[name] = have
        else:
            changed.append(f"{name!r} is {have} instead of {want}")
    parts = (([f"lacks column(s) {missing}"] if missing else []) + ([f"has extra column(s) {extra}"] if extra else [])
             + changed)
    return (None, "; ".join(parts)) if parts else (merged, "")


def _accepts_null(check):
    """ROI columns may be typed `null` (all values null: no ROI anywhere in that file)."""
    return lambda t: pa.types.is_null(t) or check(t)
