"""egal score's output read back (egal report, egal select): the columns asked for, checked to be of the kinds
egal score writes (or of their families, for a file another tool rewrote), and the record of the run."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import EgalError
from .batch_scoring import OUTPUT_SCHEMA
from .output_layout import RUN_METADATA_KEY
from .ranking import LABELLED
from .run_record import rows_missing_or_added


def read_score_output(path: str, columns, optional=()) -> tuple[pa.Table, dict | None]:
    """(the `columns` of an egal score output, and those of `optional` it has; the record of the run that wrote it,
    None from an egal that did not keep one); EgalError saying what the file is instead (not Parquet, or a Parquet
    file without those columns: a pool given for its scores) or that its record is damaged."""
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise EgalError(f"is not an egal score output (not a Parquet file: {exc})") from None
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise EgalError(f"is not an egal score output: it lacks the column(s) {', '.join(missing)} (a pool, not "
                        "its scores?)")
    wrong = [f"{c} ({schema.field(c).type}, not {OUTPUT_SCHEMA.field(c).type})" for c in columns
             if c in OUTPUT_SCHEMA.names and not _same_kind(schema.field(c).type, OUTPUT_SCHEMA.field(c).type)]
    if wrong:
        raise EgalError(f"is not an egal score output: column(s) of another type: {', '.join(wrong)}")
    present = [c for c in optional if c in schema.names]
    if LABELLED in present and not _same_kind(schema.field(LABELLED).type, pa.bool_()):
        raise EgalError(f"is not an egal score output: column {LABELLED} is {schema.field(LABELLED).type}, not bool")
    columns = [*columns, *present]
    try:
        table = pq.read_table(path, columns=list(columns))
    except (pa.ArrowException, OSError) as exc:
        raise EgalError(f"cannot be read: it is damaged ({exc}); score the pool again") from None
    if "id" in table.column_names and table.column("id").null_count:
        raise EgalError(f"is not an egal score output: {table.column('id').null_count} row(s) have no id")
    metadata = schema.metadata or {}
    if RUN_METADATA_KEY not in metadata:
        return table, None
    try:
        run = json.loads(metadata[RUN_METADATA_KEY])
    except ValueError:
        run = None
    if not isinstance(run, dict):
        raise EgalError(f"has a damaged record of its run (its {RUN_METADATA_KEY.decode()} metadata is not the "
                        "JSON egal score writes): score the pool again")
    changed = rows_missing_or_added(table.num_rows, run)
    if changed:
        raise EgalError(f"{changed}: score the pool again")
    return table, run


def _same_kind(found: pa.DataType, expected: pa.DataType) -> bool:
    """Types a scores file may hold for a column: the one written, or another of its family (a file rewritten
    by another tool: float32 for float64, large strings, dictionary-encoded strings)."""
    if pa.types.is_null(found):  # a column of nulls only, as other tools write one
        return True
    if pa.types.is_dictionary(found):
        found = found.value_type
    for family in (pa.types.is_floating, pa.types.is_integer):
        if family(expected):
            return family(found)
    if pa.types.is_string(expected) or pa.types.is_large_string(expected):
        return pa.types.is_string(found) or pa.types.is_large_string(found)
    return found == expected
