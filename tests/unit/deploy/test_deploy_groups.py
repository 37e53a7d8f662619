"""Version groups without processes: shares spread over a group's servers (never both groups
at 0), the group's histogram summed over its processes, the record read back as written (and
written in the order it changed), and a pid that is not a ``keel serve`` on the recorded port
left alone."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from keel.deploy.canary import read_traffic
from keel.deploy.groups import GroupRouter, VersionGroup, merge_histograms
from keel.deploy.haproxy import MAX_WEIGHT
from keel.deploy.local import DeploymentRecord, Step, _RecordWriter, read_record, write_record
from keel.deploy.processes import ServeProcess, Source, SourceKind, is_ours, stop_process
from keel.observe.metrics import Metrics


@dataclass
class FakeApi:
    """The runtime API's ``set weight`` and ``set server … state``, with every weight kept."""

    weights: dict[str, int] = field(default_factory=dict)
    history: list[dict[str, int]] = field(default_factory=list)

    def set_weight(self, server: str, weight: int) -> None:
        assert 0 <= weight <= MAX_WEIGHT
        self.weights[server] = weight
        self.history.append(dict(self.weights))

    def drain(self, server: str) -> None:
        self.weights[server] = 0

    def ready(self, server: str) -> None:
        pass


def _group(name: str, size: int) -> VersionGroup:
    processes = tuple(ServeProcess(pid=10_000 + i, port=20_000 + i) for i in range(size))
    return VersionGroup(name, Source(SourceKind.CHECKOUT, Path("/srv/keel")), processes)


def _router(baseline: int, canary: int) -> tuple[GroupRouter, FakeApi]:
    api = FakeApi()
    router = GroupRouter(api, _group("blue", baseline), _group("green", canary))  # type: ignore[arg-type]
    for server in router.baseline.server_names():
        api.weights[server] = MAX_WEIGHT
    return router, api


def _share(api: FakeApi, group: str) -> int:
    return sum(weight for name, weight in api.weights.items() if name.startswith(group))


@given(
    sizes=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    steps=st.lists(st.integers(0, 100), min_size=1, max_size=6),
)
def test_every_split_gives_each_group_its_share_and_never_leaves_both_at_zero(
    sizes: tuple[int, int], steps: list[int]
) -> None:
    router, api = _router(*sizes)
    for percent in steps:
        router.split(percent)
        canary, baseline = _share(api, "green"), _share(api, "blue")
        assert (canary == 0) == (percent == 0)
        assert (baseline == 0) == (percent == 100)
        assert abs(canary / (canary + baseline) - percent / 100) < 0.05 + 1 / MAX_WEIGHT * 4
    for weights in api.history:
        assert sum(weights.values()) > 0


def test_draining_the_baseline_gives_it_no_new_request() -> None:
    router, api = _router(2, 1)
    router.split(100)
    router.drain_baseline()
    assert _share(api, "blue") == 0
    assert _share(api, "green") == MAX_WEIGHT


def _scrape(statuses: list[tuple[str, float]]) -> str:
    metrics = Metrics(slo_threshold=0.3, version="1", release_id="r", git_sha="s")
    for status, seconds in statuses:
        metrics.request_duration.labels("GET", "/v1/x", status, "true").observe(seconds)
    metrics.request_duration.labels("GET", "/ready", "200", "false").observe(0.001)
    return generate_latest(metrics.registry).decode()


def test_a_groups_metrics_are_the_sum_of_its_processes() -> None:
    first = _scrape([("200", 0.01), ("500", 0.02), ("200", 0.4)])
    second = _scrape([("200", 0.01), ("200", 0.03)])
    merged = read_traffic(merge_histograms([first, second]))
    one, two = read_traffic(first), read_traffic(second)
    assert merged.requests == 5
    assert merged.errors == 1
    assert merged.buckets == one.buckets
    assert merged.counts == tuple(a + b for a, b in zip(one.counts, two.counts, strict=True))


def test_the_record_reads_back_as_written(tmp_path: Path) -> None:
    record = DeploymentRecord(
        "d1",
        tmp_path / "admin.sock",
        _group("blue", 2),
        _group("green", 1),
        Step(25, "inconclusive", 12, 40, ("canary served 12 requests, fewer than 20",), 3),
        retired=("old",),
    )
    write_record(tmp_path, record)
    assert read_record(tmp_path, "d1") == record
    assert read_record(tmp_path, "missing") is None


def test_a_pid_that_is_not_keel_serve_on_that_port_is_never_signalled() -> None:
    mine = ServeProcess(pid=os.getpid(), port=8000)
    assert not is_ours(mine)  # pytest, not keel serve
    assert stop_process(mine, wait_seconds=0.1) is False
    assert not is_ours(ServeProcess(pid=2**22 + 1, port=8000))  # no such process


def test_each_source_runs_its_own_interpreter(tmp_path: Path) -> None:
    venv = Source(SourceKind.VIRTUALENV, tmp_path / "venv")
    assert venv.python() == tmp_path / "venv" / "bin" / "python"
    release = tmp_path / "release"
    (release / ".venv" / "bin").mkdir(parents=True)
    (release / ".venv" / "bin" / "python").touch()
    (release / "src" / "keel").mkdir(parents=True)
    built = Source(SourceKind.RELEASE, release)
    assert built.python() == release / ".venv" / "bin" / "python"
    assert built.environment()["PYTHONPATH"] == str(release / "src")
    checkout = Source.current_checkout()
    assert (checkout.path / "src" / "keel").is_dir()
    assert checkout.environment()["PYTHONPATH"] == str(checkout.path / "src")
    with pytest.raises(Exception, match="no venv"):
        Source(SourceKind.RELEASE, tmp_path).python()
    assert Source.from_dict(built.as_dict()) == built


def test_a_records_groups_are_its_fields_holding_one_by_role(tmp_path: Path) -> None:
    blue, green = _group("blue", 1), _group("green", 1)
    assert DeploymentRecord("d1", tmp_path, blue).groups() == {"baseline": blue}
    assert DeploymentRecord("d1", tmp_path, blue, green).groups() == {
        "baseline": blue,
        "candidate": green,
    }


@dataclass
class SlowRecords:
    """A record store whose writes take a while, the first failing when told to."""

    fail_first: bool = False
    written: list[DeploymentRecord] = field(default_factory=list)

    async def write_record(self, record: DeploymentRecord) -> None:
        await asyncio.sleep(0.01 * (3 - len(self.written) % 3))  # earlier writes slower
        if self.fail_first:
            self.fail_first = False
            raise OSError("disk full")
        self.written.append(record)


async def test_the_record_is_written_in_the_order_it_changed_from_the_loop_and_threads(
    tmp_path: Path,
) -> None:
    records = SlowRecords(fail_first=True)
    writer = _RecordWriter(records)  # type: ignore[arg-type]
    writer.bind(asyncio.get_running_loop())
    steps = [DeploymentRecord("d1", tmp_path, _group("blue", 1), step=Step(p)) for p in range(5)]
    writer.save(steps[0])  # fails: made good by the next write, which holds everything
    writer.save(steps[1])
    writer.save(steps[2])
    await asyncio.to_thread(writer.save, steps[3])  # a thread waits until it is written
    assert records.written == steps[1:4]
    writer.save(steps[4])
    await writer.flush()
    assert records.written == steps[1:]
