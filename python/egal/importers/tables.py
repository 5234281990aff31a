"""Reading the CSV tables datasets ship: required columns checked up front, with the columns found.

Tables are read with the csv module (no pandas): annotation tables are metadata, a few MB even
for VinDr-CXR's 68,000 box rows, so they are read whole; images never are.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from .._spreadsheet import from_spreadsheet_text
from ..pool.labels import is_missing_text
from .errors import SourceError


def cell_or_none(text: str) -> str | None:
    """A table cell's text, or None where it marks a missing value (empty, NA, N/A, NaN, None, null: egal.pool.labels'
    MISSING_TEXT)."""
    return None if is_missing_text(text) else text


def pool_ids_of(spec, table_ids) -> dict[str, str]:
    """{id as a table gives it: the pool's id} for the table ids the pool holds (match_ids' rule), reading the
    pool's id column alone."""
    wanted = set(table_ids) | {from_spreadsheet_text(t) for t in table_ids}
    pool_ids = [i for i in spec.column_values("id") if i in wanted or i.strip() in wanted]
    return match_ids(table_ids, pool_ids)


def match_ids(table_ids, known_ids) -> dict[str, str]:
    """{id as a table gives it: the known id it names} for the table ids that name one. An exact match is the id
    meant. Table cells are read stripped (read_table), so a known id with surrounding spaces (which egal score keeps
    as it is in the selection it writes) is found by its stripped text; and a cell that egal wrote for a spreadsheet
    (egal._spreadsheet: "'=x" for the id "=x") by the text it stands for. SourceError when two known ids answer to
    one table id."""
    table_ids = list(table_ids)
    known = set(known_ids)
    by_stripped: dict[str, list[str]] = {}
    for ident in known:
        if ident.strip() != ident:
            by_stripped.setdefault(ident.strip(), []).append(ident)

    def named(text: str) -> str | None:
        if text in known:
            return text
        candidates = sorted(by_stripped.get(text, ()))
        if len(candidates) > 1:
            raise SourceError(f"the table's id {text!r} names two rows of the pool, {candidates[0]!r} and "
                              f"{candidates[1]!r} (table cells are read without surrounding spaces)")
        return candidates[0] if candidates else None

    found = {}
    for given in table_ids:
        ident = named(given)
        if ident is None and from_spreadsheet_text(given) != given:
            ident = named(from_spreadsheet_text(given))
        if ident is not None:
            found[given] = ident
    return found


def read_table(path, required: Sequence[str] = (), what: str = "table") -> list[dict[str, str]]:
    """The rows of a CSV file as dicts (header names stripped, a UTF-8 BOM ignored); SourceError naming
    the file when it is missing, empty or lacks a required column."""
    return [row for _, row in read_table_lines(path, required, what)]


def read_table_lines(path, required: Sequence[str] = (), what: str = "table") -> list[tuple[int, dict[str, str]]]:
    """read_table's rows with the file line each starts on (blank lines left out, as read_table leaves them,
    so that messages name the line a person finds in the file)."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{what} {str(path)!r} does not exist")
    with _open_text(path) as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise SourceError(f"{what} {str(path)!r} is empty") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise _not_a_csv(path, what, exc) from None
        repeated = sorted({c for c in header if c and header.count(c) > 1})
        if repeated:
            raise SourceError(f"{what} {str(path)!r} names column(s) {repeated} twice: which one is meant would be a "
                              "guess; rename one")
        missing = [c for c in required if c not in header]
        if missing:
            raise SourceError(f"{what} {str(path)!r} lacks column(s) {missing} (its columns: {header})")
        # A short row (trailing empty cells left out) reads as empty cells; cells past the header are ignored.
        width = len(header)
        try:
            rows, line = [], reader.line_num + 1
            for row in reader:
                if any(v.strip() for v in row):
                    rows.append((line, dict(zip(header, [v.strip() for v in row[:width]] + [""] * (width - len(row)),
                                                strict=True))))
                line = reader.line_num + 1  # (a quoted cell may span lines)
            return rows
        except (UnicodeDecodeError, csv.Error) as exc:
            raise _not_a_csv(path, what, exc) from None


def _open_text(path):
    return open(path, newline="", encoding="utf-8-sig")


def _not_a_csv(path, what: str, exc: Exception) -> SourceError:
    """A table that is not UTF-8 text (Latin-1, UTF-16 from a spreadsheet, a Parquet file given by mistake)."""
    if isinstance(exc, UnicodeDecodeError):
        reason = (f"it is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as "
                  "CSV UTF-8")
    else:
        reason = f"it is not a readable CSV ({exc})"
    return SourceError(f"{what} {str(path)!r} cannot be read: {reason}")


def header_of(path, what: str = "table") -> list[str]:
    with _open_text(path) as f:
        try:
            return [h.strip() for h in next(csv.reader(f), [])]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise _not_a_csv(path, what, exc) from None
