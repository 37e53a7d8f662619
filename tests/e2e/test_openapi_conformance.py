"""Schemathesis over the whole OpenAPI document, against real ``keel serve`` on both databases.

Every phase runs — examples, coverage, fuzzing and stateful (links inferred from
``Location`` headers and response bodies) — and every check but the ones listed in
``EXCLUDED_CHECKS``, each with its reason. Generated requests, valid and invalid, hit
every operation, probes and ``/metrics`` included; schemathesis checks that the status
code, content type, headers and body of each response are documented in
``/openapi.json``, that no response is a 5xx, and that invalid input is refused. That
is how Keel holds itself to "the OpenAPI document describes every response" and
"bad input is a 4xx, never a 500".

The demo organisation's principal has its limits lifted (``keel limits set-override
… 0`` for every per-organisation and per-user limit; per-IP limits, which no override
reaches, are raised in the policy file), so schemathesis meets Keel's logic rather than
429s. ``Idempotency-Key`` stays required where the default settings require it, so the
document's ``required: true`` is exercised. The run is deterministic (fixed seed) so
CI failures reproduce, and bounded: a few examples per operation, a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from keel.db.engine import Database
from keel.guard.overrides import set_override
from keel.guard.ratelimit.policy import Policy, load_policy
from tests.support.databases import Templates, fresh_database
from tests.support.policies import shipped_policy_with_ip_limits_lifted
from tests.support.processes import keel_server, run_keel, server_env

pytestmark = pytest.mark.e2e

# Every check schemathesis has runs, except these; each needs a reason.
EXCLUDED_CHECKS = {
    # Business rules cannot be written in a schema: a well-formed recipient_id or
    # evidence id that is not in the caller's organisation is a 422 (existence never
    # leaks), and an export's content is a 409 until the export succeeded.
    "positive_data_acceptance": "business rules (ids of your organisation) are not in a schema",
}
MAX_EXAMPLES = "25"
DEADLINE_SECONDS = 240
ROOT = Path(__file__).resolve().parents[2]


def _schemathesis_env() -> dict[str, str]:
    """Our hooks (fresh valid Idempotency-Keys: see tests/e2e/schemathesis_hooks.py)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks", "PYTHONPATH": path}


async def _lift_limits(database_url: str, policy: Policy, org_id: str) -> None:
    database = Database(database_url)
    try:
        async with database.write() as session:
            for rule in policy.limits:
                if rule.key in ("user", "org"):
                    await set_override(session, policy, org_id, rule.name, 0, set_by="test")
    finally:
        await database.dispose()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_schemathesis_finds_no_failure_on_the_whole_document(
    backend: str, templates: Templates, tmp_path: Path
) -> None:
    policy_path = shipped_policy_with_ip_limits_lifted(tmp_path)
    with fresh_database(templates, backend, tmp_path) as database_url:
        env = server_env(
            database_url,
            tmp_path,
            {
                "KEEL_MAX_UPLOAD_BYTES": "100000",
                "KEEL_RATELIMIT_POLICY": str(policy_path),
                # the shipped default, which keel_env clears for other tests
                "KEEL_IDEMPOTENCY_REQUIRED_ROUTES": "POST /v1/recognitions,POST /v1/exports",
            },
        )
        seeded = json.loads(run_keel(["admin", "seed-demo", "--json"], env, tmp_path))
        asyncio.run(_lift_limits(database_url, load_policy(policy_path), seeded["org_id"]))
        admin_token = seeded["users"][0]["token"]
        with keel_server(env, tmp_path, ready_path="/ready") as server:
            result = subprocess.run(
                [
                    str(Path(sys.executable).parent / "schemathesis"),
                    "run",
                    f"{server.url}/openapi.json",
                    "--phases",
                    "examples,coverage,fuzzing,stateful",
                    "--checks",
                    "all",
                    "--exclude-checks",
                    ",".join(sorted(EXCLUDED_CHECKS)),
                    "-H",
                    f"Authorization: Bearer {admin_token}",
                    "--max-examples",
                    MAX_EXAMPLES,
                    "--seed",
                    "20261203",
                    "--generation-deterministic",
                    "--workers",
                    "1",
                    "--request-timeout",
                    "30",
                    "--no-color",
                ],
                capture_output=True,
                text=True,
                timeout=DEADLINE_SECONDS,
                cwd=tmp_path,
                env=_schemathesis_env(),
                check=False,
            )
            server_log = server.log()
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-2000:]
    assert "Traceback" not in server_log, server_log[-4000:]
