"""Header values: the IETF draft's structured fields, the X- trio, Retry-After, warnings."""

from __future__ import annotations

import math

import pytest

from keel.guard.ratelimit.headers import (
    policy_item,
    quota_threshold_crossed,
    quota_warning_headers,
    quota_warning_value,
    ratelimit_headers,
    ratelimit_item,
    retry_after,
    sf_string,
)
from keel.guard.ratelimit.limiter import Decision, LimitResult, QuotaCommit


def result(name: str, *, allowed: bool = True, remaining: int = 5, **kw: float) -> LimitResult:
    return LimitResult(
        name=name,
        algorithm="rate",
        key=f"{name}:user:u1",
        allowed=allowed,
        quota=int(kw.get("quota", 100)),
        window=kw.get("window", 60.0),
        remaining=remaining,
        reset_after=kw.get("reset_after", 12.2),
        retry_after=kw.get("retry_after", 0.0),
    )


def test_items_use_the_drafts_parameter_names() -> None:
    assert policy_item("default", 100, 60) == '"default";q=100;w=60'
    assert ratelimit_item("default", 42, 16.2) == '"default";r=42;t=17'
    assert policy_item("x", 5, quota_unit="request") == '"x";q=5;qu="request"'
    assert policy_item("x", 5, 10, partition_key=b"u1") == '"x";q=5;w=10;pk=:dTE=:'


@pytest.mark.parametrize("code", [*range(0x80), 0xE9, 0x2028])
def test_an_sf_string_holds_exactly_the_printable_ascii_characters(code: int) -> None:
    value = f"a{chr(code)}b"
    if 0x20 <= code <= 0x7E:
        assert sf_string(value).startswith('"a')
    else:
        with pytest.raises(ValueError, match="not printable ASCII"):
            sf_string(value)


def test_sf_string_escapes_and_refuses_non_ascii() -> None:
    assert sf_string('a"b\\c') == '"a\\"b\\\\c"'
    with pytest.raises(ValueError, match="ASCII"):
        sf_string("é")


@pytest.mark.parametrize(
    ("seconds", "value"), [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2"), (59.5, "60")]
)
def test_retry_after_is_whole_seconds_rounded_up_at_least_one(seconds: float, value: str) -> None:
    assert retry_after(seconds) == value


def test_allowed_decision_lists_every_policy_fewest_remaining_first() -> None:
    decision = Decision(True, (result("api-user", remaining=9), result("api-org", remaining=3)))
    headers = ratelimit_headers(decision)
    assert headers["RateLimit-Policy"] == '"api-org";q=100;w=60, "api-user";q=100;w=60'
    assert headers["RateLimit"] == '"api-org";r=3;t=13, "api-user";r=9;t=13'
    assert headers["X-RateLimit-Limit"] == "100"
    assert headers["X-RateLimit-Remaining"] == "3"
    assert headers["X-RateLimit-Reset"] == "13"
    assert "Retry-After" not in headers


def test_refusal_points_reset_and_retry_after_at_the_same_instant() -> None:
    breach = result("api-user", allowed=False, remaining=0, retry_after=2.4, reset_after=30)
    headers = ratelimit_headers(Decision(False, (breach,), breach))
    assert headers["Retry-After"] == "3"
    assert headers["RateLimit"] == '"api-user";r=0;t=3'
    assert headers["X-RateLimit-Reset"] == "3"


def test_a_wait_with_no_end_falls_back_to_the_window() -> None:
    breach = result("api-user", allowed=False, remaining=0, retry_after=math.inf)
    assert ratelimit_headers(Decision(False, (breach,), breach))["Retry-After"] == "60"


def test_no_rules_no_headers_and_legacy_is_optional() -> None:
    assert ratelimit_headers(Decision(True, ())) == {}
    headers = ratelimit_headers(Decision(True, (result("a"),)), legacy=False)
    assert set(headers) == {"RateLimit-Policy", "RateLimit"}


@pytest.mark.parametrize(
    ("before", "after", "limit", "crossed"),
    [
        (7, 8, 10, 80),
        (8, 9, 10, 90),
        (9, 10, 10, 100),
        (8, 8, 10, None),  # a refund-then-consume back to the same count fires nothing new
        (10, 11, 10, None),  # past 100 % already: no repeat
        (0, 10, 10, 100),  # one big consume reports the highest threshold it crossed
        (3, 4, 5, 80),
        (0, 1, 1, 100),
        (0, 7, 10, None),
    ],
)
def test_quota_threshold_crossed(before: int, after: int, limit: int, crossed: int | None) -> None:
    assert quota_threshold_crossed(before, after, limit) == crossed


def test_quota_warning_value_and_headers() -> None:
    assert quota_warning_value("exports-daily", 80, 4, 5) == '"exports-daily";pct=80;used=4;q=5'
    commits = (QuotaCommit("a", 4, 5, 10.0, 80), QuotaCommit("b", 1, 5, 10.0, None))
    assert quota_warning_headers(commits) == {"Keel-Quota-Warning": '"a";pct=80;used=4;q=5'}
    assert quota_warning_headers(()) == {}
