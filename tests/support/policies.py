"""Limit policies for tests whose subject is something else than limits."""

from __future__ import annotations

from pathlib import Path

GENEROUS_POLICY = """
version = 1
[[limits]]
name = "api-user"
key = "user"
applies_to = ["*"]
algorithm = "rate"
limit = 10000
period_seconds = 60
burst = 1000
"""


def generous_policy(workdir: Path) -> Path:
    """A policy file under which only the behaviour under test can refuse a request."""
    path = workdir / "generous-policy.toml"
    path.write_text(GENEROUS_POLICY)
    return path
