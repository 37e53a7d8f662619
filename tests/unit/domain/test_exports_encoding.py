"""The export encoders: CSV cells never start a formula, JSON carries the exact text."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator

from hypothesis import given
from hypothesis import strategies as st

from keel.domain.csv_cells import FORMULA_TRIGGERS
from keel.domain.exports import COLUMNS, ExportFormat, _encode

# Text a recognition can hold: any Unicode scalar value (no lone surrogates).
text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
formula = st.builds(
    lambda first, rest: first + rest, st.sampled_from(sorted(FORMULA_TRIGGERS)), text
)
rows = st.lists(
    st.fixed_dictionaries(
        {
            "message": st.one_of(text, formula),
            "category": st.one_of(st.none(), text, formula),
            "evidence_ids": st.lists(st.uuids().map(str), max_size=2),
        }
    ),
    min_size=1,
    max_size=6,
)


def _exported(fmt: ExportFormat, items: list[dict[str, object]]) -> str:
    async def source() -> AsyncIterator[dict[str, object]]:
        for index, item in enumerate(items):
            yield {
                "id": f"id-{index}",
                "giver_id": "giver",
                "recipient_id": "recipient",
                "created_at": "2026-01-01T00:00:00+00:00",
                **item,
            }

    async def collect() -> bytes:
        return b"".join([chunk async for chunk, _ in _encode(fmt, source())])

    return asyncio.run(collect()).decode()


@given(rows)
def test_no_csv_cell_starts_a_formula_and_nothing_else_changes(
    items: list[dict[str, object]],
) -> None:
    parsed = list(csv.reader(io.StringIO(_exported(ExportFormat.CSV, items), newline="")))
    assert parsed[0] == list(COLUMNS)
    assert len(parsed) == len(items) + 1
    for item, row in zip(items, parsed[1:], strict=True):
        for cell in row:
            assert not cell or cell[0] not in FORMULA_TRIGGERS
        for column in ("message", "category"):
            original = item[column] or ""
            assert row[COLUMNS.index(column)] in (original, "'" + str(original))


@given(rows)
def test_a_json_export_round_trips_the_exact_text(items: list[dict[str, object]]) -> None:
    exported = json.loads(_exported(ExportFormat.JSON, items))
    assert [(e["message"], e["category"]) for e in exported] == [
        (item["message"], item["category"]) for item in items
    ]
