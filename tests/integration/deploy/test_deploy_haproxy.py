"""Real HAProxy in front of two tiny HTTP servers: weights changed live through the runtime
API shift the traffic, and a drain empties a server — with zero failed requests from a client
that never stops."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.processes import free_port
from tests.support.services import need_binary
from tests.support.versions import SteadyClient, VersionServer

from keel.deploy.haproxy import (
    HAProxy,
    HAProxyCommandFailed,
    HAProxyUnavailable,
    RuntimeApi,
    Server,
    render_config,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def versions() -> Iterator[tuple[VersionServer, VersionServer]]:
    with VersionServer("blue") as blue, VersionServer("green") as green:
        yield blue, green


def test_weights_shift_traffic_live_and_a_drain_empties_a_server_with_no_failed_request(
    versions: tuple[VersionServer, VersionServer],
) -> None:
    need_binary("haproxy", fallback="/usr/sbin/haproxy")
    blue, green = versions
    servers = [
        Server("blue", "127.0.0.1", blue.port, weight=100),
        Server("green", "127.0.0.1", green.port, weight=0),
    ]
    port = free_port()
    # A short directory: a unix socket path holds ~100 bytes.
    with (
        tempfile.TemporaryDirectory(prefix="keel-ha-") as workdir,
        HAProxy(servers, workdir=Path(workdir), bind_port=port) as proxy,
        SteadyClient(port) as client,
    ):
        assert set(client.wait_for(40)) == {"blue"}

        proxy.api.set_weight("green", 100)  # 50 % each, no reload
        assert proxy.api.weight("green") == 100
        client.wait_for(2)  # requests already on their way
        shared = client.wait_for(100)
        assert 30 <= shared.count("green") <= 70, shared

        proxy.api.set_weight("green", 256)
        proxy.api.set_weight("blue", 0)
        client.wait_for(2)
        assert set(client.wait_for(40)) == {"green"}

        proxy.api.set_weight("blue", 100)
        proxy.api.drain("green")  # no new requests, whatever its weight
        client.wait_for(2)
        assert set(client.wait_for(40)) == {"blue"}
        assert proxy.api.sessions()["green"] == 0

        with pytest.raises(HAProxyCommandFailed):
            proxy.api.set_weight("purple", 10)
    assert client.failures == []
    assert len(client.answers) >= 220


def test_the_configuration_balances_roundrobin_over_every_version() -> None:
    config = render_config(
        [Server("a", "127.0.0.1", 8001, 100), Server("b", "127.0.0.1", 8002, 0)],
        bind_host="127.0.0.1",
        bind_port=8000,
        admin_socket=Path("/tmp/x.sock"),
        health_path="/ready",
    )
    assert "balance roundrobin" in config
    assert "stats socket /tmp/x.sock mode 600 level admin" in config
    assert "server b 127.0.0.1:8002 weight 0 check" in config
    assert "option httpchk GET /ready" in config


def test_keel_deploy_proxy_runs_haproxy_in_front_of_the_baseline(
    versions: tuple[VersionServer, VersionServer],
) -> None:
    need_binary("haproxy", fallback="/usr/sbin/haproxy")
    blue, green = versions
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="keel-ha-") as workdir:
        command = [
            sys.executable, "-m", "keel.cli", "deploy", "proxy", "--port", str(port),
            "--baseline", f"127.0.0.1:{blue.port}", "--canary", f"127.0.0.1:{green.port}",
            "--workdir", workdir, "--health-path", "",
        ]  # fmt: skip
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            api = RuntimeApi(Path(workdir) / "admin.sock")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    api.command("show info")
                    with SteadyClient(port) as client:
                        answers = client.wait_for(10)
                    break
                except HAProxyUnavailable:
                    time.sleep(0.1)
            else:
                pytest.fail("keel deploy proxy did not come up")
            assert set(answers) == {"blue"}
            assert (api.weight("baseline"), api.weight("canary")) == (100, 0)
        finally:
            process.terminate()
            process.wait(timeout=10)
