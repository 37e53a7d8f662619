"""What can go wrong with a deployment, as part of Keel's one error tree."""

from __future__ import annotations

from keel.errors import Conflict, Forbidden, InvalidInput, NotFound


class DeploymentNotFound(NotFound):
    title = "Deployment not found"


class DeploymentInProgress(Conflict):
    """The environment already has an active deployment (the database refused a second)."""

    title = "A deployment is already in progress"


class ApprovalRefused(Forbidden):
    """An approval that the environment's gate does not accept (self-approval, twice, too late)."""

    title = "Approval refused"


class InvalidEnvironment(InvalidInput):
    title = "Invalid environment name"


class InvalidOperator(InvalidInput):
    """An operator name that cannot be recorded (the audit log takes no email addresses)."""

    title = "Invalid operator name"


class RollbackRefused(Conflict):
    """The release traffic would go back to cannot serve the schema (a contract revision ran)."""

    title = "Rollback refused"


class MigrationPhaseRefused(Conflict):
    """A migration phase asked for at the wrong moment (contract before promotion, …)."""

    title = "Migration phase refused"
