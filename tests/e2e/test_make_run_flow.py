"""What `make run` promises: migrate, seed, serve — and the printed curl creates a recognition."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx

from tests.support.processes import free_port, keel_env, keel_server, run_keel


def test_seeded_demo_and_printed_curl_work_against_a_real_server(tmp_path: Path) -> None:
    env = keel_env({})  # the embedded default: ./keel.db and ./keel-data in the working directory
    run_keel(["migrate", "upgrade"], env, tmp_path)
    printed = run_keel(["admin", "seed-demo"], env, tmp_path)
    again = run_keel(["admin", "seed-demo"], env, tmp_path)
    assert "(created)" in printed
    assert again == printed.replace("(created)", "(already there)")  # idempotent, same tokens
    curl = printed[printed.index("curl ") :].strip()
    port = free_port()
    curl = curl.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
    with keel_server(env, tmp_path, port=port) as server:
        result = subprocess.run(
            ["bash", "-c", curl],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        created = json.loads(result.stdout)
        assert re.fullmatch(r"[0-9a-f-]{36}", created["id"])
        token = re.search(r"Bearer (keel_[\w-]+)", curl)
        assert token is not None
        listed = httpx.get(
            f"{server.url}/v1/recognitions", headers={"Authorization": f"Bearer {token.group(1)}"}
        ).json()
        assert [item["id"] for item in listed["items"]] == [created["id"]]
    assert (tmp_path / "keel.db").exists()
