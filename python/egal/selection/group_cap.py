"""Group caps: at most `per_group` selected rows per group (a patient, a study), each group's best first.

A batch of 60 that holds twelve neighbouring slices of one patient pays twelve times for
nearly one answer. With a cap the selection walks the ranked order (score descending, ties
by id) and skips a row whose group already has `per_group` rows chosen: each group gives
its best rows, and no group more than the cap.
"""
from __future__ import annotations

import numpy as np

from .._checks import bad_argument
from ..pool.labels import is_label
from .errors import SelectionError


def is_missing_group(value) -> bool:
    """A group cell is empty by the label column's rule (null, NaN, empty or blank text), in every command that
    reads groups: a pool that egal select accepts is accepted by egal simulate and the other way round."""
    return not is_label(value)


def group_codes(groups, rows: np.ndarray, size: int) -> np.ndarray:
    """An integer code per row of `groups` (equal values, equal codes), one for each of `size` scores, checked to
    be non-null on `rows` (the rows that can be selected): a null group is an error naming the first such rows."""
    groups = np.asarray(groups, dtype=object)
    if groups.ndim != 1:
        raise bad_argument(SelectionError, "groups", f"must be 1-d, one group per row, got shape {groups.shape}")
    if groups.shape[0] != size:
        raise bad_argument(SelectionError, "groups", f"has {groups.shape[0]} entries but scores has {size}")
    codes = np.empty(groups.shape[0], dtype=np.int64)
    index: dict = {}
    for i, value in enumerate(groups.tolist()):
        if is_missing_group(value):
            codes[i] = -1
            continue
        try:
            codes[i] = index.setdefault(value, len(index))
        except TypeError:  # a list, a dict: no value to compare groups by
            raise bad_argument(SelectionError, "groups", f"holds {type(value).__name__} values (position {i}): a "
                               "group is a string or a number, such as a patient id") from None
    null = rows[codes[rows] < 0]
    if null.size:
        raise bad_argument(
            SelectionError, "groups",
            f"is null or blank for {null.size} row(s) that could be selected (positions {', '.join(map(str, null[:5]))}"
            f"{', ...' if null.size > 5 else ''}): every such row needs a group; give a row that belongs to no "
            "group a value of its own (its id, say) to make it a group of one")
    return codes


def cap_per_group(order: np.ndarray, codes: np.ndarray, per_group: int) -> np.ndarray:
    """The rows of `order` (positions, best first) that a cap of `per_group` per group keeps, in that order:
    a row is kept when fewer than per_group rows of its group come before it in `order`."""
    return order[place_in_group(codes[order]) < per_group]


def place_in_group(group: np.ndarray) -> np.ndarray:
    """For a sequence of group codes, how many earlier entries share each entry's group (0 for the first of
    its group): a row's place in its group's own ranked order."""
    if group.size == 0:
        return np.zeros(0, dtype=np.int64)
    by_group = np.argsort(group, kind="stable")  # within a group, the sequence's order
    sorted_groups = group[by_group]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    before = np.arange(group.size) - np.repeat(starts, np.diff(np.r_[starts, group.size]))
    place = np.empty(group.size, dtype=np.int64)
    place[by_group] = before
    return place


def selectable_rows(codes: np.ndarray, rows: np.ndarray, per_group: int) -> int:
    """How many of `rows` a cap of per_group can select at most: the sum over groups of min(rows, cap)."""
    counts = np.bincount(codes[rows]) if rows.size else np.zeros(0, dtype=np.int64)
    return int(np.minimum(counts, per_group).sum())
