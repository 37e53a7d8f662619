"""The claim state machine: the moves in ``TRANSITIONS`` are allowed, every other refused."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from keel.errors import KeelError
from keel.guard.idempotency import (
    TRANSITIONS,
    IdempotencyStateError,
    KeyState,
    Transition,
    move,
)
from keel.guard.idempotency.store import ClaimResult, source_of, standing, take_over, target_of

STATES: tuple[KeyState | None, ...] = (None, *KeyState)


@pytest.mark.parametrize(("transition", "source"), list(itertools.product(Transition, STATES)))
def test_a_move_is_allowed_exactly_from_the_state_its_row_names(
    transition: Transition, source: KeyState | None
) -> None:
    expected_source, target = TRANSITIONS[transition]
    if source is expected_source:
        assert move(transition, source) is target
    else:
        with pytest.raises(IdempotencyStateError):
            move(transition, source)


def test_a_refused_move_is_a_keel_error() -> None:
    assert issubclass(IdempotencyStateError, KeelError)


def test_an_expired_row_is_taken_over_or_reclaimed_by_its_state() -> None:
    assert take_over("in_flight") is Transition.TAKE_OVER
    assert take_over("completed") is Transition.RECLAIM


def test_the_sql_state_values_come_from_the_table() -> None:
    assert (source_of(Transition.COMPLETE), target_of(Transition.COMPLETE)) == (
        "in_flight",
        "completed",
    )
    with pytest.raises(IdempotencyStateError):
        source_of(Transition.CLAIM)  # a claim starts from no row
    with pytest.raises(IdempotencyStateError):
        target_of(Transition.RELEASE)  # a release ends in no row


T0 = datetime(2026, 11, 29, tzinfo=UTC)
LATER = T0 + timedelta(seconds=10)


@pytest.mark.parametrize(
    ("state", "locked_until", "expires_at", "expected"),
    [
        ("in_flight", LATER, LATER, ClaimResult.IN_FLIGHT),
        ("in_flight", T0, LATER, None),  # the lease ends at its instant
        ("completed", T0, LATER, ClaimResult.COMPLETED),  # an outcome has no lease
        ("completed", LATER, T0, None),
    ],
)
def test_a_row_is_live_until_its_lease_or_retention_ends(
    state: str, locked_until: datetime, expires_at: datetime, expected: ClaimResult | None
) -> None:
    assert standing(state, locked_until, expires_at, T0) is expected
