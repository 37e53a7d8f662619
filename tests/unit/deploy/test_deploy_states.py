"""The deployment state table and the approval gate, with no database."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.deploy import (
    ACTIVE,
    TERMINAL,
    TRANSITIONS,
    ApprovalGate,
    ApprovalRefused,
    DeploymentState,
    IllegalTransition,
    InvalidEnvironment,
    check_environment,
    gate_for,
)
from keel.deploy.states import check
from keel.settings import Settings

S = DeploymentState


def test_terminal_states_are_exactly_promoted_rolled_back_and_failed() -> None:
    assert {S.PROMOTED, S.ROLLED_BACK, S.FAILED} == TERMINAL
    assert {S.CREATED, S.PRE_CHECKS, S.AWAITING_APPROVAL, S.ROLLING} == ACTIVE


def test_every_active_state_can_be_rolled_back_or_failed_at_any_moment() -> None:
    for state in ACTIVE:
        assert {S.ROLLED_BACK, S.FAILED} <= TRANSITIONS[state]


def test_traffic_moves_only_after_pre_checks_and_promotion_only_from_rolling() -> None:
    into_rolling = {source for source, targets in TRANSITIONS.items() if S.ROLLING in targets}
    assert into_rolling == {S.PRE_CHECKS, S.AWAITING_APPROVAL}
    into_promoted = {source for source, targets in TRANSITIONS.items() if S.PROMOTED in targets}
    assert into_promoted == {S.ROLLING}
    assert S.ROLLING not in TRANSITIONS[S.CREATED]


@given(st.sampled_from(list(S)), st.sampled_from(list(S)))
def test_check_refuses_exactly_the_moves_missing_from_the_table(
    source: DeploymentState, target: DeploymentState
) -> None:
    if target in TRANSITIONS[source]:
        check(source, target)
    else:
        with pytest.raises(IllegalTransition):
            check(source, target)


def test_the_gate_counts_from_settings_and_keeps_four_eyes_where_configured() -> None:
    settings = Settings.model_validate(
        {"deploy_approvals": "prod=2, staging=1", "deploy_four_eyes_environments": "prod"}
    )
    assert gate_for(settings, "prod") == ApprovalGate("prod", 2, creator_may_approve=False)
    assert gate_for(settings, "staging") == ApprovalGate("staging", 1, creator_may_approve=True)
    assert gate_for(settings, "dev").required == 0


def test_approval_settings_accept_json_and_refuse_negative_or_malformed_counts() -> None:
    assert Settings.model_validate({"deploy_approvals": '{"prod": 3}'}).deploy_approvals == {
        "prod": 3
    }
    for bad in ("prod=-1", "prod", "prod=two"):
        with pytest.raises(ValueError, match="deploy_approvals"):
            Settings.model_validate({"deploy_approvals": bad})


def test_the_creator_cannot_approve_under_four_eyes_and_nobody_approves_twice() -> None:
    prod = ApprovalGate("prod", 2, creator_may_approve=False)
    with pytest.raises(ApprovalRefused, match="creator"):
        prod.check(creator="alice", approver="alice", already=[])
    with pytest.raises(ApprovalRefused, match="already"):
        prod.check(creator="alice", approver="bob", already=["bob"])
    prod.check(creator="alice", approver="bob", already=["carol"])
    ApprovalGate("dev", 1, creator_may_approve=True).check(
        creator="alice", approver="alice", already=[]
    )


@pytest.mark.parametrize("name", ["", "Prod", "prod env", "p" * 33, "-prod", "prod;drop"])
def test_environment_names_are_refused_unless_plain(name: str) -> None:
    with pytest.raises(InvalidEnvironment):
        check_environment(name)
