"""A promoted deployment's contract phase, with no database: its state table, and when the
contract revisions run, wait, or are not recorded at all."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.deploy import ContractPhase, IllegalTransition
from keel.deploy.post_promotion import Action, Decision, decide
from keel.deploy.states import CONTRACT_TRANSITIONS, OUTSTANDING, check_contract

C = ContractPhase


def test_a_phase_ends_applied_or_failed_only_by_a_run() -> None:
    into = {
        target: {source for source, targets in CONTRACT_TRANSITIONS.items() if target in targets}
        for target in C
    }
    assert into[C.APPLIED] == {C.RUNNING}
    assert into[C.FAILED] == {C.RUNNING}
    assert into[C.PENDING] == {None, C.PENDING}  # a phase waits only before any run


def test_a_failed_or_interrupted_phase_can_be_run_again() -> None:
    for source in (C.PENDING, C.FAILED, C.RUNNING, C.APPLIED, None):
        check_contract(source, C.RUNNING)
    assert C.APPLIED not in OUTSTANDING
    assert {C.PENDING, C.RUNNING, C.FAILED} == OUTSTANDING


@given(st.sampled_from([None, *C]), st.sampled_from(list(C)))
def test_check_contract_refuses_exactly_the_moves_missing_from_the_table(
    source: ContractPhase | None, target: ContractPhase
) -> None:
    if target in CONTRACT_TRANSITIONS[source]:
        check_contract(source, target)
    else:
        with pytest.raises(IllegalTransition):
            check_contract(source, target)


@pytest.mark.parametrize(
    ("pending", "deferred", "still_running", "action", "words"),
    [
        # Nothing to contract: the phase is not recorded, whatever else holds.
        ((), False, (), Action.NOTHING, ()),
        ((), True, (4242,), Action.NOTHING, ()),
        # The usual case: every old process has stopped.
        (("c003", "c004"), False, (), Action.RUN, ()),
        # The plan could not be read: the run is attempted, so its failure is recorded.
        (None, False, (), Action.RUN, ()),
        # The operator's --no-contract.
        (("c003",), True, (), Action.DEFER, ("c003 pending", "deferred by the operator")),
        # An old process outlived its drain: never contract under it.
        (("c003",), False, (4242, 4243), Action.DEFER, ("still runs (pid 4242, 4243)",)),
        (None, False, (4242,), Action.DEFER, ("contract revisions pending", "pid 4242")),
        # Deferred wins over still running: the operator asked to wait anyway.
        (("c003",), True, (4242,), Action.DEFER, ("deferred by the operator",)),
    ],
)
def test_decide_runs_the_contract_only_when_asked_and_no_old_process_is_left(
    pending: tuple[str, ...] | None,
    deferred: bool,
    still_running: tuple[int, ...],
    action: Action,
    words: tuple[str, ...],
) -> None:
    decision = decide("D1", pending=pending, deferred=deferred, still_running=still_running)
    assert decision.action is action
    if action is not Action.DEFER:
        assert decision == Decision(action)
        return
    assert decision.reason is not None
    for word in words:
        assert word in decision.reason
    # A deferred phase names the command that runs it later.
    assert "keel deploy migrate D1 --phase contract" in decision.reason
