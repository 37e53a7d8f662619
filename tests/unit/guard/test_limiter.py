"""RateLimiter over the memory backend: which rules apply, order, quota reservations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keel.guard.ratelimit.backend import SlotClaim
from keel.guard.ratelimit.errors import LimitExceeded
from keel.guard.ratelimit.headers import quota_warning_headers, ratelimit_headers
from keel.guard.ratelimit.limiter import RateLimiter, RequestContext
from keel.guard.ratelimit.memory import MemoryBackend
from keel.guard.ratelimit.policy import LimitOverride, Policy, default_policy, parse_policy
from keel.guard.ratelimit.quota import QuotaWindow

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC).timestamp()
DAY_UTC = QuotaWindow("day")

POLICY = parse_policy(
    """
version = 1

[[limits]]
name = "quota-daily"
key = "user"
applies_to = ["things.create"]
algorithm = "quota"
limit = 3
window = "day"

[[limits]]
name = "user-rate"
key = "user"
applies_to = ["*"]
algorithm = "rate"
limit = 60
period_seconds = 60
burst = 5

[[limits]]
name = "org-rate"
key = "org"
applies_to = ["POST /v1/things"]
algorithm = "rate"
limit = 60
period_seconds = 60
burst = 2

[[limits]]
name = "anon"
key = "ip"
applies_to = ["*"]
principal = "anonymous"
algorithm = "rate"
limit = 60
period_seconds = 60
burst = 1
"""
)


def ctx(**kw: object) -> RequestContext:
    base: dict[str, object] = {
        "route": "GET /v1/things",
        "operation": "things.list",
        "user_id": "u1",
        "org_id": "o1",
        "ip": "10.0.0.1",
    }
    base.update(kw)
    return RequestContext(**base)  # type: ignore[arg-type]


@pytest.fixture
def limiter() -> RateLimiter:
    return RateLimiter(MemoryBackend())


def test_only_matching_rules_with_a_subject_apply(limiter: RateLimiter) -> None:
    names = [e.name for e, _ in limiter.applicable(POLICY.limits, ctx())]
    assert names == ["user-rate"]
    create = ctx(route="POST /v1/things", operation="things.create")
    assert [e.name for e, _ in limiter.applicable(POLICY.limits, create)] == [
        "quota-daily",
        "user-rate",
        "org-rate",
    ]
    anonymous = ctx(user_id=None, org_id=None)
    assert [e.name for e, _ in limiter.applicable(POLICY.limits, anonymous)] == ["anon"]


def test_keys_separate_rules_and_subjects(limiter: RateLimiter) -> None:
    [(_, key)] = limiter.applicable(POLICY.limits, ctx())
    assert key == "user-rate:user:u1"


async def test_rate_limit_refuses_past_burst_and_names_the_breach(limiter: RateLimiter) -> None:
    decisions = [await limiter.decide(POLICY.limits, ctx(), NOW) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    last = decisions[-1]
    assert last.breached is not None
    assert last.breached.name == "user-rate"
    assert last.retry_after == pytest.approx(1.0)
    error = LimitExceeded(
        limit_name=last.breached.name,
        retry_after=last.retry_after,
        headers=ratelimit_headers(last),
    )
    assert (error.status, error.headers["Retry-After"]) == (429, "1")


async def test_most_restrictive_rule_is_reported(limiter: RateLimiter) -> None:
    create = ctx(route="POST /v1/things", operation="things.create")
    decision = await limiter.decide(POLICY.limits, create, NOW)
    assert decision.allowed
    top = decision.most_restrictive
    assert top is not None
    assert (top.name, top.remaining) == ("org-rate", 1)


async def test_quota_is_reserved_by_decide_and_kept_on_success(limiter: RateLimiter) -> None:
    create = ctx(route="POST /v1/things", operation="things.create", org_id=None)
    decisions = [await limiter.decide(POLICY.limits, create, NOW + i) for i in range(3)]
    assert all(d.allowed for d in decisions)
    # Each admission reserved its unit: the reading is after the reservation.
    assert [d.results[0].remaining for d in decisions] == [2, 1, 0]
    commits = []
    for decision in decisions:
        assert decision.reservation is not None
        commits.append(decision.reservation.keep())
    assert [c[0].crossed for c in commits] == [None, None, 100]
    assert [c[0].used for c in commits] == [1, 2, 3]
    assert quota_warning_headers(commits[-1]) == {
        "Keel-Quota-Warning": '"quota-daily";pct=100;used=3;q=3'
    }
    assert decisions[0].reservation is not None
    assert decisions[0].reservation.keep() == ()  # settled once
    refused = await limiter.decide(POLICY.limits, create, NOW + 120)
    assert not refused.allowed
    assert refused.reservation is None
    assert refused.breached is not None
    assert refused.breached.name == "quota-daily"
    # An exhausted quota refuses before spending any rate cell.
    assert [r.name for r in refused.results] == ["quota-daily"]
    # The next UTC day starts fresh.
    assert (await limiter.decide(POLICY.limits, create, NOW + 12 * 3600)).allowed


async def test_a_rule_free_of_quotas_reserves_nothing(limiter: RateLimiter) -> None:
    assert (await limiter.decide(POLICY.limits, ctx(), NOW)).reservation is None


async def test_a_refusal_by_the_org_limit_spends_nothing_of_the_users(
    limiter: RateLimiter,
) -> None:
    create = ctx(route="POST /v1/things")  # user-rate (burst 5) and org-rate (burst 2)
    outcomes = [await limiter.decide(POLICY.limits, create, NOW) for _ in range(4)]
    assert [d.allowed for d in outcomes] == [True, True, False, False]
    refused = outcomes[-1]
    assert refused.breached is not None
    assert refused.breached.name == "org-rate"
    # The user's reading on the refusal is what is really left: 5 - 2 admitted.
    assert [(r.name, r.remaining) for r in refused.results] == [("user-rate", 3), ("org-rate", 0)]
    plain = await limiter.decide(POLICY.limits, ctx(), NOW)  # only user-rate applies
    assert plain.results[0].remaining == 2


async def test_a_full_slot_refuses_the_request_and_spends_no_cell(limiter: RateLimiter) -> None:
    claims = [SlotClaim("slots:org:o1", 10, 30.0), SlotClaim("slots:user:u1", 1, 30.0)]
    first = await limiter.decide(POLICY.limits, ctx(), NOW, slots=claims)
    assert first.allowed
    assert [s.acquired for s in first.slots] == [True, True]
    assert first.refused_slot is None
    second = await limiter.decide(POLICY.limits, ctx(), NOW, slots=claims)
    assert (second.allowed, second.breached, second.refused_slot) == (False, None, 1)
    assert second.slots[0].in_flight == 1  # the org's slot was not taken either
    assert (await limiter.decide(POLICY.limits, ctx(), NOW)).results[0].remaining == 3


async def test_a_released_reservation_gives_its_unit_back_exactly_once(
    limiter: RateLimiter,
) -> None:
    create = ctx(operation="things.create", org_id=None)
    decisions = [await limiter.decide(POLICY.limits, create, NOW) for _ in range(3)]
    assert not (await limiter.decide(POLICY.limits, create, NOW)).allowed
    failed = decisions[1].reservation
    assert failed is not None
    assert await failed.release()
    assert not await failed.release()  # idempotent: the unit comes back once
    assert failed.keep() == ()  # and a released reservation cannot be kept
    retried = await limiter.decide(POLICY.limits, create, NOW)
    assert retried.allowed
    assert not (await limiter.decide(POLICY.limits, create, NOW)).allowed


async def test_a_release_after_midnight_gives_back_to_the_day_it_was_reserved_in(
    limiter: RateLimiter,
) -> None:
    create = ctx(operation="things.create", org_id=None)
    today = [await limiter.decide(POLICY.limits, create, NOW) for _ in range(3)]
    tomorrow = NOW + 12 * 3600
    kept = await limiter.decide(POLICY.limits, create, tomorrow)
    assert kept.allowed
    assert today[0].reservation is not None
    await today[0].reservation.release()
    report = await limiter.backend.quota_check("quota-daily:user:u1", 3, DAY_UTC, tomorrow)
    assert report.used == 1  # tomorrow's count is untouched
    assert (await limiter.backend.quota_check("quota-daily:user:u1", 3, DAY_UTC, NOW)).used == 2


async def test_quota_window_follows_the_orgs_time_zone(limiter: RateLimiter) -> None:
    # 03:00 UTC is still the previous day in New York.
    late = datetime(2026, 6, 2, 3, tzinfo=UTC).timestamp()
    early = datetime(2026, 6, 2, 5, tzinfo=UTC).timestamp()
    create = ctx(operation="things.create", org_id=None, timezone="America/New_York")
    for _ in range(3):
        assert (await limiter.decide(POLICY.limits, create, late)).allowed
    assert not (await limiter.decide(POLICY.limits, create, late + 60)).allowed
    assert (await limiter.decide(POLICY.limits, create, early)).allowed


async def test_plan_and_override_change_the_enforced_numbers(limiter: RateLimiter) -> None:
    override = ctx(overrides={"user-rate": LimitOverride(burst=1)})
    assert (await limiter.decide(POLICY.limits, override, NOW)).allowed
    assert not (await limiter.decide(POLICY.limits, override, NOW)).allowed
    disabled = ctx(user_id="u2", overrides={"user-rate": LimitOverride(enabled=False)})
    for _ in range(10):
        decision = await limiter.decide(POLICY.limits, disabled, NOW)
        assert decision.allowed
        assert decision.results == ()


async def test_default_policy_works_end_to_end(limiter: RateLimiter) -> None:
    policy: Policy = default_policy()
    anonymous = ctx(user_id=None, org_id=None, route="GET /v1/recognitions", operation=None)
    admitted = [(await limiter.decide(policy.limits, anonymous, NOW)).allowed for _ in range(12)]
    assert admitted.count(True) == 10
