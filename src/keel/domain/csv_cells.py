"""Spreadsheet-safe CSV cells: a cell never starts a formula.

A CSV export is opened in a spreadsheet, and a spreadsheet evaluates a cell
that begins with ``=``, ``+``, ``-`` or ``@`` (and, in some versions, a tab or
carriage return before one of them) as a formula: ``=HYPERLINK(…)`` leaks data
on a click, ``+cmd|' /C calc'!A0`` ran commands through DDE. Following OWASP's
advice, such a cell is prefixed with a single quote (which spreadsheets read as
"this is text" and do not display) and every cell is quoted, so the quote
cannot be separated from the text by a lenient parser. Line feed and NUL are
treated the same way, and so are the full-width forms of the four signs, which
some spreadsheets fold to their ASCII forms. JSON exports are not touched:
they are read by programs, which must see the exact text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

FORMULA_TRIGGERS = frozenset("=+-@\t\r\n\0\uff1d\uff0b\uff0d\uff20")
"""First characters that make a spreadsheet read a cell as a formula."""


def neutralise(cell: str) -> str:
    """``cell`` as a spreadsheet will show it, never as a formula it would run."""
    if cell and cell[0] in FORMULA_TRIGGERS:
        return "'" + cell
    return cell


def csv_line(cells: Iterable[object]) -> bytes:
    """One CSV record (RFC 4180, every cell quoted), each cell neutralised, as UTF-8."""
    buffer = io.StringIO()
    csv.writer(buffer, quoting=csv.QUOTE_ALL).writerow(
        neutralise("" if cell is None else str(cell)) for cell in cells
    )
    return buffer.getvalue().encode()
