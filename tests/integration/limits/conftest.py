"""A small policy so that limits can be reached in a handful of requests."""

from __future__ import annotations

from pathlib import Path

import pytest

SMALL_POLICY = """
version = 1

[plans]
free = 1.0
team = 1.0
enterprise = 1.0

[[limits]]
name = "api-user"
key = "user"
applies_to = ["*"]
algorithm = "rate"
limit = 600
period_seconds = 60
burst = 50

[[limits]]
name = "anon-ip"
key = "ip"
applies_to = ["*"]
principal = "anonymous"
algorithm = "rate"
limit = 3
period_seconds = 60
burst = 3

[[limits]]
name = "auth-failures-ip"
key = "ip"
applies_to = ["auth.failed"]
algorithm = "rate"
limit = 4
period_seconds = 900
burst = 4

[[limits]]
name = "recognitions-daily"
key = "user"
applies_to = ["recognitions.create"]
algorithm = "quota"
limit = 10
window = "day"
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(SMALL_POLICY)
    return path
