"""The fresh baseline's weight plan and router, without processes: each step's three shares,
never all groups at 0, every way back sending everything to production (also when another
shell has already retired a group), and its place in the deployment's record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.deploys import FakeRuntimeApi

from keel.deploy.fresh_baseline import (
    FreshBaselinePlan,
    FreshBaselineRouter,
    Shares,
    free_ports,
    shares,
)
from keel.deploy.groups import VersionGroup
from keel.deploy.haproxy import MAX_WEIGHT
from keel.deploy.local import DeploymentRecord, read_record, record_path, write_record
from keel.deploy.processes import ServeProcess, Source, SourceKind


def _group(name: str, size: int) -> VersionGroup:
    processes = tuple(ServeProcess(pid=10_000 + i, port=20_000 + i) for i in range(size))
    return VersionGroup(name, Source(SourceKind.CHECKOUT, Path("/srv/keel")), processes)


def _router(size: int = 1, production_size: int = 2) -> tuple[FreshBaselineRouter, FakeRuntimeApi]:
    api = FakeRuntimeApi()
    production = _group("prod", production_size)
    router = FreshBaselineRouter(
        api,  # type: ignore[arg-type]
        production=production,
        baseline=_group("base", size),
        canary=_group("cana", size),
    )
    for group in (router.production, router.baseline, router.canary):
        for server in group.server_names():
            api.weights[server] = MAX_WEIGHT if group is production else 0
    return router, api


def _share(api: FakeRuntimeApi, prefix: str) -> int:
    return sum(weight for name, weight in api.weights.items() if name.startswith(prefix))


def test_the_default_steps_give_the_documented_shares() -> None:
    assert [shares(percent) for percent in (5, 25, 50, 75, 100)] == [
        Shares(5, 5, 90),
        Shares(25, 25, 50),
        Shares(50, 50, 0),
        Shares(75, 25, 0),
        Shares(100, 0, 0),
    ]
    assert shares(0) == Shares(0, 0, 100)  # a way back: all to production
    assert shares(50, max_percent=10) == Shares(50, 10, 40)  # production keeps a share


@given(percent=st.integers(0, 100), cap=st.integers(1, 50))
def test_the_baseline_matches_the_canary_as_far_as_room_and_cap_allow(
    percent: int, cap: int
) -> None:
    share = shares(percent, cap)
    assert share.canary + share.baseline + share.production == 100
    assert share.canary == percent
    assert min(share.baseline, share.production) >= 0
    if percent in (0, 100):
        assert share.baseline == 0
        return
    # Below 100 % there is always a baseline to compare with, never more than the canary.
    assert 1 <= share.baseline <= min(percent, cap)
    if percent <= min(cap, 50):
        assert share.baseline == percent  # equal loads and samples: like with like
    if share.baseline < min(percent, cap):
        assert share.production == 0  # less only when nothing is left


def test_a_percentage_outside_0_to_100_is_refused() -> None:
    for wrong in (-1, 101):
        with pytest.raises(ValueError, match="between 0 and 100"):
            shares(wrong)
    with pytest.raises(ValueError, match="capped"):
        FreshBaselinePlan(max_percent=60)


@given(
    size=st.integers(1, 3),
    steps=st.lists(st.integers(0, 100), min_size=1, max_size=6),
)
def test_every_split_gives_the_three_groups_their_shares_and_never_leaves_all_at_zero(
    size: int, steps: list[int]
) -> None:
    router, api = _router(size)
    for percent in steps:
        router.split(percent)
        expected = shares(percent)
        total = sum(api.weights.values())
        for prefix, wanted in (
            ("cana", expected.canary),
            ("base", expected.baseline),
            ("prod", expected.production),
        ):
            got = _share(api, prefix)
            assert (got == 0) == (wanted == 0), (prefix, percent)
            assert abs(got / total - wanted / 100) < 0.02 + 4 / MAX_WEIGHT
    for weights in api.history:
        assert sum(weights.values()) > 0
    assert router.splits == [shares(percent) for percent in steps]


def test_the_way_back_skips_groups_another_shell_has_already_retired() -> None:
    router, api = _router()
    router.split(25)
    for server in router.canary.server_names():  # `keel deploy rollback` deleted them
        del api.weights[server]
    router.split(0)
    assert _share(api, "prod") == MAX_WEIGHT
    assert _share(api, "base") == 0


def test_promotion_drains_production_and_the_fresh_baseline() -> None:
    router, api = _router()
    router.split(100)
    router.drain_baseline()
    assert _share(api, "cana") == MAX_WEIGHT
    assert _share(api, "base") == _share(api, "prod") == 0
    assert api.drained == {*router.production.server_names(), *router.baseline.server_names()}


def test_the_fresh_baseline_has_as_many_ports_as_the_canary() -> None:
    assert FreshBaselinePlan(ports=(9001, 9002)).ports_for(2) == [9001, 9002]
    with pytest.raises(ValueError, match="needs 2 ports"):
        FreshBaselinePlan(ports=(9001,)).ports_for(2)
    chosen = FreshBaselinePlan().ports_for(3)
    assert len(set(chosen)) == 3
    assert all(port > 0 for port in chosen)
    assert len(set(free_ports(2))) == 2


def test_the_record_keeps_the_fresh_baseline_and_reads_records_written_before_it(
    tmp_path: Path,
) -> None:
    record = DeploymentRecord(
        "d1",
        tmp_path / "admin.sock",
        _group("blue", 2),
        _group("green", 2),
        retired=("bd1",),
        fresh_baseline=_group("bd1", 2),
    )
    write_record(tmp_path, record)
    assert read_record(tmp_path, "d1") == record
    older = record.as_dict()
    del older["fresh_baseline"]
    record_path(tmp_path, "d2").write_text(json.dumps({**older, "deployment_id": "d2"}))
    read = read_record(tmp_path, "d2")
    assert read is not None
    assert read.fresh_baseline is None
    assert read.candidate == record.candidate
