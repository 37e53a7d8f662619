"""A fresh baseline for a canary: the production release, started anew beside the canary.

A process that has just started is slower than one that has served for hours: cold
caches and connection pools, the first run of every code path. Compared with the
long-running production group, a healthy canary looks slower, and the analysis either
rolls it back for nothing or must demand evidence so overwhelming that a real
regression slips through. Load biases the comparison too: at a 5 % step production
serves nineteen times the canary's requests, and on a busy machine the more loaded
process is the slower one, which flatters the canary. Kayenta and Spinnaker's answer,
followed here: start a **fresh baseline** — the production release (the live group's
own source: checkout, virtualenv or release directory), as many processes as the
canary, on ports of its own — and compare the canary with it. Both are equally cold,
both get the same share of traffic, so the test compares like with like; production
serves the rest.

Shares at each step (:func:`shares`): the baseline gets the canary's percentage as long
as there is room for it, production the rest. With the default steps:

====== ====== ======== ==========
step   canary baseline production
====== ====== ======== ==========
5 %    5      5        90
25 %   25     25       50
50 %   50     50       0
75 %   75     25       0
100 %  100    0        0
====== ====== ======== ==========

Equal shares, not just equal sizes: a process's latency depends on its load, and a
baseline capped below the canary's share (25 % beside a 50 % canary, the first design)
made a healthy canary look slower on a busy machine (P(canary slower) = 0.75 at
p < 1e-4 in the e2e tests) — the same kind of bias the fresh baseline removes. So at
50 % production takes no new requests for one step; it stays registered, up and not
drained, and a rollback gives it everything back in one weight change. Above 50 % the
baseline can only have what is left, so a step there is judged on unequal loads; the
default steps analyse up to 50 % and then promote. ``max_percent`` caps the baseline
lower, for a service whose production group must keep a share; it buys that with
exactly this bias.

The baseline's life is that of any version group (:mod:`keel.deploy.groups`): started
with the canary when no approval gate stands between them (as Kayenta does: equally old,
and its start-up overlaps the canary's), else when the gate opens, so that no third group
idles through a wait for approval; ready when every process answers ``/ready`` and its
``/version`` names the release production runs (a group started from a checkout that
has moved on since is no baseline), registered at weight 0, and at the end — promoted,
rolled back, failed or cancelled — drained and stopped by its recorded pid.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import httpx

from keel.deploy.groups import VersionGroup, drain, route, send_back
from keel.deploy.haproxy import RuntimeApi
from keel.deploy.processes import ProcessError
from keel.deploy.release import Release

DEFAULT_MAX_PERCENT = 50  # no cap below the room the canary leaves


class BaselineKind(StrEnum):
    """What a canary is compared with."""

    FRESH = "fresh"  # a new group of the production release, started for the canary
    PRODUCTION = "production"  # the long-running live group itself (biased by warm-up)


@dataclass(frozen=True, slots=True)
class FreshBaselinePlan:
    """Where the fresh baseline runs and how large a share it may take.

    ``ports`` empty: the operating system picks free ones on 127.0.0.1. ``env`` ``None``:
    the environment the canary is started with (an e2e test's fault settings belong to
    the canary only, so tests pass the production one).
    """

    ports: Sequence[int] = ()
    max_percent: int = DEFAULT_MAX_PERCENT
    env: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.max_percent <= 50:
            raise ValueError("the fresh baseline's share is capped between 1 and 50 %")

    def ports_for(self, size: int) -> list[int]:
        """One port per process: the plan's, or free ones when it names none."""
        if not self.ports:
            return free_ports(size)
        if len(self.ports) != size:
            raise ValueError(
                f"the fresh baseline needs {size} ports, as many as the canary; "
                f"{len(self.ports)} given"
            )
        return list(self.ports)


@dataclass(frozen=True, slots=True)
class Shares:
    """Each group's percentage of new requests at one step; they add up to 100."""

    canary: int
    baseline: int
    production: int


def shares(canary_percent: int, max_percent: int = DEFAULT_MAX_PERCENT) -> Shares:
    """The three shares when the canary has ``canary_percent`` %.

    The baseline matches the canary — equal loads, so that latency compares like with
    like, and equal samples, which give the test its power — as far as what the canary
    leaves and ``max_percent`` allow; production gets the rest. Below 100 % the baseline
    always has at least 1 %: the analysis never waits for samples that cannot come. At
    0 % (every way back) and 100 % there is nothing to compare: the baseline gets nothing.
    """
    if not 0 <= canary_percent <= 100:
        raise ValueError("a percentage is between 0 and 100")
    baseline = min(canary_percent, 100 - canary_percent, max_percent)
    return Shares(canary_percent, baseline, 100 - canary_percent - baseline)


class FreshBaselineRouter:
    """The canary walk's router with three groups: canary, fresh baseline, production.

    ``split(p)`` sets the three :func:`shares`, the largest first (:func:`route`), so
    the groups are never all at 0. ``split(0)`` — every way back — sends everything to
    production and skips groups another shell's rollback has already retired.
    ``drain_baseline`` (at promotion) drains production and the fresh baseline alike.
    """

    def __init__(
        self,
        api: RuntimeApi,
        *,
        production: VersionGroup,
        baseline: VersionGroup,
        canary: VersionGroup,
        max_percent: int = DEFAULT_MAX_PERCENT,
    ) -> None:
        self.api = api
        self.production = production
        self.baseline = baseline
        self.canary = canary
        self.max_percent = max_percent
        self.splits: list[Shares] = []

    def split(self, canary_percent: int) -> None:
        target = shares(canary_percent, self.max_percent)
        if canary_percent == 0:
            send_back(self.api, self.production, self.canary, self.baseline)
        else:
            route(
                self.api,
                [
                    (self.canary, target.canary),
                    (self.baseline, target.baseline),
                    (self.production, target.production),
                ],
            )
        self.splits.append(target)

    def drain_baseline(self) -> None:
        for group in (self.baseline, self.production):
            drain(self.api, group)


async def production_release(production: VersionGroup) -> Release:
    """The release the live group runs, as its first process' ``/version`` names it."""
    url = production.processes[0].url + "/version"
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(url)
        response.raise_for_status()
    try:
        release = response.json()["release"]
        return Release(
            version=str(release["version"]),
            git_sha=str(release["git_sha"]),
            migration_head=str(release["migration_head"]),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise ProcessError(f"{url} names no release: {error!r}") from error


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free now, chosen by the operating system.

    All sockets stay open until every port is chosen, so the same port is never
    handed out twice; another program may still take one before ``keel serve`` binds
    it, which the baseline's ``/ready`` wait then reports.
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for opened in sockets:
            opened.bind((host, 0))
        return [int(opened.getsockname()[1]) for opened in sockets]
    finally:
        for opened in sockets:
            opened.close()
