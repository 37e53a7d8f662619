"""Safe deploys: releases, deployments as a state machine, approval gates, pre-checks.

Framework-free (no web imports): the ``keel deploy`` CLI drives it on its own.

``states``
    The deployment's states and the one table of legal moves.
``release``
    What would run: version, git sha, migration head.
``approvals``
    Per-environment approval gates from settings.
``store``
    Deployments in the database; every move checked, recorded and audited.
``prechecks``
    What must hold before a release takes traffic.
``canary``
    Canary analysis: error rate and latency of canary against baseline from
    each version's ``/metrics`` (thresholds and a Mann-Whitney U test).
``migration_cycle``
    Expand revisions before traffic, contract after promotion, and no rollback
    to a release the schema has left behind.
``post_promotion``
    A promoted deployment's contract phase, run once no old process is left.
``prometheus_source``
    The analysis' inputs from Prometheus, and the analysis as PromQL.
``manifests``
    Kubernetes manifests for a release, with an Argo Rollouts canary.
"""

from keel.deploy.approvals import ApprovalGate, check_environment, gate_for
from keel.deploy.canary import Analysis, Thresholds, Traffic, Verdict, analyse, read_traffic
from keel.deploy.errors import (
    ApprovalRefused,
    DeploymentInProgress,
    DeploymentNotFound,
    InvalidEnvironment,
    InvalidOperator,
    MigrationPhaseRefused,
    RollbackRefused,
)
from keel.deploy.migration_cycle import MigrationCycle
from keel.deploy.prechecks import (
    CheckResult,
    ExpandBeforeTraffic,
    MigrationsRehearsed,
    PreCheck,
    SchemaServable,
    SmokeTest,
    run_pre_checks,
)
from keel.deploy.release import Release, current_release
from keel.deploy.states import (
    ACTIVE,
    TERMINAL,
    TRANSITIONS,
    ContractPhase,
    DeploymentState,
    IllegalTransition,
)
from keel.deploy.store import SYSTEM_ACTOR, Deployment, DeploymentStore, Strategy, Transition

__all__ = [
    "ACTIVE",
    "SYSTEM_ACTOR",
    "TERMINAL",
    "TRANSITIONS",
    "Analysis",
    "ApprovalGate",
    "ApprovalRefused",
    "CheckResult",
    "ContractPhase",
    "Deployment",
    "DeploymentInProgress",
    "DeploymentNotFound",
    "DeploymentState",
    "DeploymentStore",
    "ExpandBeforeTraffic",
    "IllegalTransition",
    "InvalidEnvironment",
    "InvalidOperator",
    "MigrationCycle",
    "MigrationPhaseRefused",
    "MigrationsRehearsed",
    "PreCheck",
    "Release",
    "RollbackRefused",
    "SchemaServable",
    "SmokeTest",
    "Strategy",
    "Thresholds",
    "Traffic",
    "Transition",
    "Verdict",
    "analyse",
    "check_environment",
    "current_release",
    "gate_for",
    "read_traffic",
    "run_pre_checks",
]
