"""Reading the CSV tables datasets ship: required columns checked up front, with the columns found.

Tables are read with the csv module (no pandas): annotation tables are metadata, a few MB even
for VinDr-CXR's 68,000 box rows, so they are read whole; images never are.
"""
from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import SourceError


def read_table(path, required: Sequence[str] = (), what: str = "table") -> list[dict[str, str]]:
    """The rows of a CSV file as dicts (header names stripped, a UTF-8 BOM ignored); SourceError naming
    the file when it is missing, empty or lacks a required column."""
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"{what} {str(path)!r} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise SourceError(f"{what} {str(path)!r} is empty") from None
        missing = [c for c in required if c not in header]
        if missing:
            raise SourceError(f"{what} {str(path)!r} lacks column(s) {missing} (its columns: {header})")
        # A short row (trailing empty cells left out) reads as empty cells; cells past the header are ignored.
        width = len(header)
        return [dict(zip(header, [v.strip() for v in row[:width]] + [""] * (width - len(row)), strict=True))
                for row in reader if any(v.strip() for v in row)]


def require_columns(header: Iterable[str], required: Sequence[str], path, what: str) -> None:
    header = list(header)
    missing = [c for c in required if c not in header]
    if missing:
        raise SourceError(f"{what} {str(path)!r} lacks column(s) {missing} (its columns: {header})")


def header_of(path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return [h.strip() for h in next(csv.reader(f), [])]
