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


class FrontNotRegistered(NotFound):
    """The environment has no front (``keel deploy front --env ENV`` registers one)."""

    title = "No front registered"


class RecordInconsistent(Conflict):
    """A deployment's record that cannot be kept as written (a retired group it never held)."""

    title = "Deployment record inconsistent"


class FrontNotServing(Conflict):
    """The environment's registered front cannot be used: its HAProxy is gone, or it runs on
    another host (pids and sockets mean something only there)."""

    title = "Front not serving"


class FrontAlreadyRegistered(Conflict):
    """The environment's registered front still runs: a second is not registered over it."""

    title = "Front already registered"
