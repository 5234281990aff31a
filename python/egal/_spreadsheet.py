"""Text cells of the CSV files egal writes for people (selections, exports), safe to open in a spreadsheet.

Excel, LibreOffice and Google Sheets run a cell that starts with = + - @ (or a tab or carriage return before one) as
a formula, and a pool id or class name comes from whoever made the dataset: `=HYPERLINK(...)` as an id would be a
link on the annotator's screen. Such a cell is written with a leading apostrophe, which spreadsheets show as text
and drop; egal drops it when it reads one of its own CSV files back, so ids still find their pool rows. The
apostrophe itself is escaped the same way, so that every text reads back as written.
"""
from __future__ import annotations

FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def spreadsheet_text(text: str) -> str:
    """The cell to write for `text`."""
    return "'" + text if text.startswith(FORMULA_START) else text


def from_spreadsheet_text(cell: str) -> str:
    """The text a cell that spreadsheet_text wrote stands for (any other cell as it is)."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_START) else cell
