"""Approval gates: how many people must approve a deployment, and who may.

Per environment, from settings: ``KEEL_DEPLOY_APPROVALS`` gives the number of
distinct approvers (an environment not listed needs none) and
``KEEL_DEPLOY_FOUR_EYES_ENVIRONMENTS`` the environments where the creator of a
deployment cannot be one of them — in prod, the person who wants a change out
is not the one who vouches for it. Pure: the store calls :func:`check` under
the deployment's row lock.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from keel.deploy.errors import ApprovalRefused, InvalidEnvironment
from keel.settings import Settings

_ENVIRONMENT = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def check_environment(name: str) -> str:
    if not _ENVIRONMENT.match(name):
        raise InvalidEnvironment(
            f"{name!r} is not an environment name (lowercase letters, digits, '-'; up to 32)"
        )
    return name


@dataclass(frozen=True, slots=True)
class ApprovalGate:
    environment: str
    required: int
    creator_may_approve: bool

    def check(self, *, creator: str, approver: str, already: Collection[str]) -> None:
        """Raise unless ``approver`` may add an approval now."""
        if approver in already:
            raise ApprovalRefused(f"{approver} has already approved this deployment")
        if approver == creator and not self.creator_may_approve:
            raise ApprovalRefused(
                f"in {self.environment} the creator of a deployment cannot approve it"
            )

    def satisfied(self, approvals: int) -> bool:
        return approvals >= self.required


def gate_for(settings: Settings, environment: str) -> ApprovalGate:
    check_environment(environment)
    return ApprovalGate(
        environment=environment,
        required=settings.deploy_approvals.get(environment, 0),
        creator_may_approve=environment not in settings.deploy_four_eyes_environments,
    )
