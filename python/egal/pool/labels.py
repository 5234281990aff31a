"""What a label column's cell means: the one rule that training, simulate, pool info, add-labels and
export-selection share, so that a row one of them trains on is never "unlabeled" to another."""
from __future__ import annotations


def is_label(value) -> bool:
    """A cell holds a label unless it is null, NaN or an empty string: pools written by pandas or from a CSV
    mark a missing label in each of these ways."""
    return value is not None and value == value and str(value) != ""


def label_key(value) -> str | None:
    """The class a cell names, as text (labels of any type are classes by their text); None: unlabeled."""
    return str(value) if is_label(value) else None
