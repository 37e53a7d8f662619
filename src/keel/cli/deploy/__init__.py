"""``keel deploy``: create, approve, watch and roll back deployments.

Thin wrappers over :mod:`keel.deploy`. A deployment created here runs its
pre-checks at once and stops at the environment's approval gate or in
``rolling``; ``promote`` and ``rollback`` end it. Everything is recorded in the
database and the audit log, so any operator's ``status`` sees the same truth.
"""

from __future__ import annotations

# Each module registers its commands on the shared app when imported; this order is the
# order ``keel deploy --help`` lists them in.
from keel.cli.deploy import local, records, walks  # noqa: F401
from keel.cli.deploy._shared import app

__all__ = ["app"]
