"""Sortable ids and opaque cursors."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.domain.pagination import decode_cursor, encode_cursor
from keel.errors import BadRequest
from keel.ids import is_valid_id, new_id, new_ids, uuid7


def test_ids_are_version_7_and_strictly_increasing_within_a_process() -> None:
    ids = [new_id() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids[:10])


def test_a_batch_of_ids_is_what_one_by_one_would_give() -> None:
    batch = [new_id(), *new_ids(5000), new_id()]
    assert batch == sorted(batch)
    assert len(set(batch)) == len(batch)
    assert all(is_valid_id(i) and uuid.UUID(i).version == 7 for i in batch)
    assert all(uuid.UUID(i).variant == uuid.RFC_4122 for i in batch)


def test_a_batch_past_the_counter_borrows_the_next_millisecond_and_stays_ordered() -> None:
    batch = new_ids(3 * 4096)  # more ids than one millisecond's 12-bit counter holds
    assert batch == sorted(batch)
    assert len(set(batch)) == len(batch)
    stamps = [uuid.UUID(i).int >> 80 for i in batch]
    assert stamps[-1] - stamps[0] >= 2
    assert new_id() > batch[-1]
    assert new_ids(0) == []


@given(st.integers(min_value=0, max_value=2**48 - 1))
def test_the_timestamp_is_the_leading_48_bits(ms: int) -> None:
    value = uuid7(ms)
    assert value.int >> 80 >= ms  # a clock stepping back never makes ids go backwards
    assert value.variant == uuid.RFC_4122


@given(st.uuids())
def test_cursor_round_trips(value: uuid.UUID) -> None:
    assert decode_cursor(encode_cursor(str(value))) == str(value)


@pytest.mark.parametrize("cursor", ["", "!!!", "eyJ4IjoxfQ", encode_cursor("not-an-id"), "e30"])
def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(BadRequest):
        decode_cursor(cursor)


def test_is_valid_id_wants_the_canonical_form() -> None:
    good = new_id()
    assert is_valid_id(good)
    assert not is_valid_id(good.upper())
    assert not is_valid_id("x")
