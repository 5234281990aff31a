"""The selection CSV: the rows `egal score --select` and `egal select` chose, best first, written beside the scores
(NAME.selection.csv by default) and read back by `egal report` and `egal pool export-selection`.

    rank,id,score,entropy_norm,misalignment,pred[,group]

Numbers are written to 6 decimals, a row without ROI has an empty misalignment, and text cells (ids, class names,
groups: from whoever made the pool) are written for spreadsheets (egal._spreadsheet). A reader needs only the ids
(READ_COLUMNS): a list of ids made elsewhere is a selection too. Imports no pyarrow (egal score's options use it).
"""
from __future__ import annotations

import csv
import os

from .._atomic import replaced_atomically
from .._checks import bad_argument
from .._paths import csv_name_problem, sidecar_path, starts_with_header
from .._spreadsheet import spreadsheet_text
from ..errors import EgalError

SELECTION_COLUMNS = ("rank", "id", "score", "entropy_norm", "misalignment", "pred")
READ_COLUMNS = ("id",)  # what a reader needs of a selection CSV


def selection_path_for(out: str) -> str:
    """Where the selection CSV goes by default: NAME.selection.csv next to NAME.parquet."""
    return sidecar_path(out, ".selection.csv")


def check_selection_name(path, name: str) -> None:
    """EgalError when `path` (the argument `name`, where a selection is written) has an extension other than .csv:
    selection.parquet would hold CSV text under a name that says Parquet."""
    problem = csv_name_problem(path)
    if problem:
        raise bad_argument(EgalError, name, f"is where the selection goes, as CSV: {problem}")


def is_selection_csv(path) -> bool:
    """A selection CSV that egal wrote (what --overwrite may replace with another)."""
    return starts_with_header(path, SELECTION_COLUMNS[:2])


def write_selection_csv(selection, path: str) -> None:
    """Writes `selection` (a pyarrow Table: SELECTION_COLUMNS, and a group column with a cap) to `path`, atomically."""
    with replaced_atomically(os.path.abspath(path)) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(selection.column_names)
        for row in zip(*(selection.column(c).to_pylist() for c in selection.column_names), strict=True):
            writer.writerow([_csv_cell(v) for v in row])
        f.flush()
        os.fsync(f.fileno())


def _csv_cell(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""  # no ROI: misalignment is undefined (docs/scoring.md, empty ROI)
    if isinstance(value, str):  # an id, a class name, a group: from whoever made the pool
        return spreadsheet_text(value)
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def checked_selection_rows(rows: list[dict[str, str]], error: type[Exception], *, no_rows: str,
                           repeated) -> list[dict[str, str]]:
    """The rows of a selection CSV (as egal.importers.tables.read_table reads them, with READ_COLUMNS), once they
    are a selection: some rows, each id once (a row is annotated once). Otherwise `error` with the reader's own
    words: `no_rows`, or `repeated(ids)` for the ids named more than once, in the order they repeat."""
    if not rows:
        raise error(no_rows)
    seen, twice = set(), {}
    for row in rows:
        if row["id"] in seen:
            twice[row["id"]] = None
        seen.add(row["id"])
    if twice:
        raise error(repeated(list(twice)))
    return rows
