"""Test/pool splits that keep each patient (group) on one side, and the class-balanced seed set."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import EgalError


def split_test(labels, groups=None, *, test_groups: Sequence[str] | None = None, test_fraction: float = 0.2,
               seed: int = 0):
    """(pool_rows, test_rows), sorted row indices.

    With groups (patient ids, or a patient-wise fold column) the split is by
    group: `test_groups` names the test groups, or else whole groups are drawn
    at random (Generator(seed)) until test_fraction of the rows is reached.
    Without groups, rows are drawn per class (stratified).
    """
    labels = np.asarray(labels)
    n = len(labels)
    if groups is not None:
        groups = np.asarray(groups).astype(str)
        if test_groups:
            wanted = {str(g) for g in test_groups}
            unknown = sorted(wanted - set(groups.tolist()))
            if unknown:
                raise EgalError(f"test group(s) {unknown} do not occur in the group column (it has "
                                f"{sorted(set(groups.tolist()))[:10]})")
            test = np.isin(groups, list(wanted))
        else:
            test = np.zeros(n, dtype=bool)
            for g in np.random.default_rng(seed).permutation(np.unique(groups)):
                if test.sum() >= test_fraction * n:
                    break
                test |= groups == g
    else:
        if test_groups:
            raise EgalError("test groups were given but the data has no group column")
        rng = np.random.default_rng(seed)
        test = np.zeros(n, dtype=bool)
        for c in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == c))
            test[rows[: int(round(test_fraction * rows.size))]] = True
    pool, test_rows = np.flatnonzero(~test), np.flatnonzero(test)
    if pool.size == 0 or test_rows.size == 0:
        raise EgalError(f"the split leaves {pool.size} pool and {test_rows.size} test rows; both must be non-empty")
    if groups is not None and set(groups[pool].tolist()) & set(groups[test_rows].tolist()):
        raise AssertionError("a group is on both sides of the split")  # cannot happen; guards the invariant
    return pool, test_rows


def balanced_seed_set(labels, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` row indices with the classes as equal as the data allows.

    This is the experiment's starting annotation (the same for every strategy
    of a seed), drawn with the labels the way a team would commission a
    balanced first batch; strategies only ever see labels after this point.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    if size > len(labels):
        raise EgalError(f"the seed set ({size}) is larger than the pool ({len(labels)})")
    rows_by_class = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in classes}
    chosen = []
    # Round-robin over the classes in a random order; a class that runs out drops out.
    order = list(rng.permutation(classes))
    while len(chosen) < size:
        for c in order:
            if rows_by_class[c] and len(chosen) < size:
                chosen.append(rows_by_class[c].pop())
        order = [c for c in order if rows_by_class[c]]
    return np.sort(np.array(chosen, dtype=np.int64))
