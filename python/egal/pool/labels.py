"""What a label column's cell means: the one rule that training, simulate, pool info, add-labels and
export-selection share, so that a row one of them trains on is never "unlabeled" to another."""
from __future__ import annotations

from dataclasses import dataclass

# Text that marks a missing value, in any case and with any surrounding spaces: what pandas' read_csv takes for
# NaN among the common spellings, and what str() of a missing value gives (pandas' astype(str): "nan", "None").
# A table cell (egal.importers.tables) holding one is empty. In a pool's label column, where a class may be
# called "None" or "NA", only blank text is no label; the others stay labels, and pool info and egal train say
# that they look like missing values (reads_as_missing).
MISSING_TEXT = ("", "NA", "N/A", "NAN", "NONE", "NULL")
LABEL_COLUMN = "label"  # the pool format's label column; other commands name another with label_column
# Raised whenever is_label changes, so that datasets decoded under the old rule (egal.loop.data's cache) are not
# reused: 2, a blank label is no label (2026-11-28).
LABEL_RULES = 2


def is_missing_text(text: str) -> bool:
    return text.strip().upper() in MISSING_TEXT


def is_label(value) -> bool:
    """A cell holds a label unless it is null, NaN, empty or blank (text or bytes): pools written by pandas or from
    a CSV mark a missing label in each of these ways."""
    if isinstance(value, (str, bytes)):
        return len(value.strip()) > 0
    return value is not None and value == value


def reads_as_missing(value) -> bool:
    """A label whose text is one of MISSING_TEXT's spellings ("nan", "None", "NA", ...): a class by that name, or a
    missing value that a script wrote as text (pandas' astype(str) does), which only the pool's author can tell."""
    return isinstance(value, str) and is_label(value) and is_missing_text(value)


def label_key(value) -> str | None:
    """The class a cell names, as text (labels of any type are classes by their text); None: unlabeled."""
    return str(value) if is_label(value) else None


@dataclass(frozen=True)
class PoolLabels:
    """A pool's label column, read once (read_labels): what labelled_rows and label_counts give, for a caller that
    needs both, or one of them more than once, without reading the column again.

    rows:   [num_rows] bool, in the pool's read order: whether each row has a label (is_label)
    counts: {class (label_key): labelled rows}, the classes in the order of their first row
    """

    rows: object
    counts: dict


def read_labels(spec, column: str = LABEL_COLUMN) -> PoolLabels:
    """labelled_rows and label_counts of the pool (an egal.pool.PoolSpec) from one read of `column` alone; a pool
    without the column has no labelled row.

    is_label and label_key decide, as ever, but once per distinct value of each block of rows the pool is read in
    (pyarrow's dictionary_encode finds them), not once per cell: a label column holds a few classes and nulls.
    A column of a type that cannot be so encoded (lists, extension types) is judged cell by cell."""
    import numpy as np

    if column not in spec.columns:
        return PoolLabels(np.zeros(spec.num_rows, dtype=bool), {})
    flags, counts = [], {}
    for array in spec.column_arrays(column):
        labelled, found = _labels_of(array)
        flags.append(labelled)
        for key, n in found:
            counts[key] = counts.get(key, 0) + n
    return PoolLabels(np.concatenate(flags) if flags else np.zeros(0, dtype=bool), counts)


def _labels_of(array) -> tuple:
    """([rows] bool, [(label_key, rows), ...] in the order of their first row) of one pyarrow array."""
    import numpy as np
    import pyarrow as pa

    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()  # its dictionary may repeat values, or hold some no row uses
    try:
        if isinstance(array.type, pa.ExtensionType):
            raise pa.ArrowNotImplementedError("an extension type's cells are what its own to_pylist says")
        encoded = array.dictionary_encode()  # nulls: null indices; the dictionary in the order of first rows
    except pa.ArrowNotImplementedError:
        return _labels_of_cells(array.to_pylist())
    values = encoded.dictionary.to_pylist()
    none = len(values)  # the index of the null cells, which hold no label
    indices = encoded.indices.fill_null(none).to_numpy(zero_copy_only=False)
    flags = np.array([is_label(v) for v in values] + [False], dtype=bool)
    rows = np.bincount(indices, minlength=none + 1)
    return flags[indices], [(label_key(v), int(rows[i])) for i, v in enumerate(values) if flags[i]]


def _labels_of_cells(values: list) -> tuple:
    """_labels_of, cell by cell."""
    import numpy as np

    labelled = np.array([is_label(v) for v in values], dtype=bool)
    counts: dict = {}
    for value, flag in zip(values, labelled.tolist(), strict=True):
        if flag:
            key = label_key(value)
            counts[key] = counts.get(key, 0) + 1
    return labelled, list(counts.items())


def labelled_rows(spec, column: str = LABEL_COLUMN):
    """[num_rows] bool, in the pool's read order: whether each row of the pool (an egal.pool.PoolSpec) has a
    label in `column`. Reads that column alone; a pool without it has no labelled row (a caller that was given
    the column's name checks that the pool has it: check_label_column). read_labels gives label_counts too."""
    return read_labels(spec, column).rows


def label_counts(spec, column: str = LABEL_COLUMN) -> dict:
    """{class (label_key): labelled rows} of the pool (an egal.pool.PoolSpec), reading that column alone; empty for
    a pool without the column. read_labels gives labelled_rows too."""
    return read_labels(spec, column).counts


def check_label_column_name(column, argument: str = "label_column") -> str:
    from .._checks import bad_argument
    from ..errors import EgalError

    if not isinstance(column, str) or not column:
        raise bad_argument(EgalError, argument, f"must be a column name, got {column!r}")
    return column


def check_label_column(spec, column: str, argument: str = "label_column", *, required: bool = False) -> None:
    """A label column other than the pool format's `label` must be one of the pool's columns (a typo would
    otherwise make every row unlabelled). `argument` names the option in the error. required: the pool's `label`
    too, for a command that needs labels (training): a pool without it keeps them under another name."""
    from ..errors import EgalError

    check_label_column_name(column, argument)
    if column != LABEL_COLUMN:
        spec.check_columns([column], argument, error=EgalError)
    elif required and column not in spec.columns:
        raise EgalError(f"pool {spec.path!r} has no column {column!r} (the default label column): name the column "
                        f"that holds the labels with {argument} (--{argument.replace('_', '-')}); it has "
                        f"{', '.join(repr(c) for c in spec.columns)}")
