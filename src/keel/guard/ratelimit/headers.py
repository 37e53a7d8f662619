"""Response header values for rate limits, as plain ``dict[str, str]``.

Follows draft-ietf-httpapi-ratelimit-headers (revisions -08 to -11, checked
2026-11): two Structured Field lists whose members are a policy name as an
sf-string with parameters —

* ``RateLimit-Policy: "recognitions-daily";q=10;w=86400`` — quota ``q`` per
  window ``w`` seconds (optional ``qu`` quota unit, ``pk`` partition key);
* ``RateLimit: "recognitions-daily";r=7;t=41000`` — ``r`` remaining quota
  units, ``t`` seconds until quota is made available again.

The numbers come from :class:`~keel.guard.ratelimit.limiter.LimitResult` and
so ``q - r`` is real usage after the request: a quota's count including this
request's reservation, and for a GCRA rate limit the bucket it keeps — ``q`` the
burst, ``w`` the seconds a full refill takes, ``r`` what fits now (an
``api-user`` of 120/min with burst 30 reads ``q=30;w=15``, ``r=29`` after a new
user's first request). The ``X-RateLimit-*`` trio carries the same numbers for
the most restrictive limit: ``-Limit`` = q, ``-Remaining`` = r, ``-Reset`` = t.

Alongside, the de-facto ``X-RateLimit-Limit``/``-Remaining``/``-Reset``
(seconds until reset) for clients that predate the draft, ``Retry-After``
(integer seconds, rounded up, at least 1) on refusals, and Keel's own
``Keel-Quota-Warning`` when a consume crosses 80, 90 or 100 % of a quota.

No Starlette here: the middleware copies these into its response.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keel.guard.ratelimit.limiter import Decision, LimitResult, QuotaCommit

WARNING_THRESHOLDS: tuple[int, ...] = (80, 90, 100)


def sf_string(value: str) -> str:
    """An RFC 9651 sf-string: quoted, with ``\\`` and ``"`` escaped."""
    # Of ASCII, ``isprintable`` admits exactly ``%x20-7E``, checked in C rather than a
    # loop over characters (each limited response names each limit twice).
    if not (value.isascii() and value.isprintable()):
        raise ValueError(f"not printable ASCII: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _seconds(value: float) -> int:
    """Delay-seconds: a non-negative integer, rounded up so clients never come early."""
    if not math.isfinite(value):
        raise ValueError("an unbounded wait has no header value")
    return max(0, math.ceil(value - 1e-9))


def retry_after(seconds: float) -> str:
    """``Retry-After`` value: integer seconds, rounded up, at least 1."""
    return str(max(1, _seconds(seconds)))


def policy_item(
    name: str,
    quota: int,
    window: float | None = None,
    *,
    quota_unit: str | None = None,
    partition_key: bytes | None = None,
) -> str:
    """One ``RateLimit-Policy`` member: ``"name";q=100;w=60``."""
    item = f"{sf_string(name)};q={quota}"
    if quota_unit is not None:
        item += f";qu={sf_string(quota_unit)}"
    if window is not None:
        item += f";w={_seconds(window)}"
    if partition_key is not None:
        # The draft types pk as an sf-binary (byte sequence): base64 between colons.
        item += f";pk=:{base64.b64encode(partition_key).decode('ascii')}:"
    return item


def ratelimit_item(name: str, remaining: int, reset_after: float | None = None) -> str:
    """One ``RateLimit`` member: ``"name";r=42;t=17``."""
    item = f"{sf_string(name)};r={max(0, remaining)}"
    if reset_after is not None:
        item += f";t={_seconds(reset_after)}"
    return item


def _reset(result: LimitResult) -> float:
    # On a refusal the draft asks t to name the same instant as Retry-After.
    if not result.allowed and math.isfinite(result.retry_after):
        return result.retry_after
    return result.reset_after


def ratelimit_headers(decision: Decision, *, legacy: bool = True) -> dict[str, str]:
    """Every rate-limit header for a decision (empty when no rule applied).

    Both lists name every evaluated rule, most restrictive first (the draft
    asks that the lowest remaining come first when windows differ). The
    ``X-RateLimit-*`` trio reports only the most restrictive one.
    """
    headers: dict[str, str] = {}
    top = decision.most_restrictive
    if top is None:
        return headers
    ordered = [top, *(r for r in decision.results if r is not top)]
    headers["RateLimit-Policy"] = ", ".join(policy_item(r.name, r.quota, r.window) for r in ordered)
    headers["RateLimit"] = ", ".join(
        ratelimit_item(r.name, r.remaining, _reset(r)) for r in ordered
    )
    if legacy:
        headers["X-RateLimit-Limit"] = str(top.quota)
        headers["X-RateLimit-Remaining"] = str(max(0, top.remaining))
        headers["X-RateLimit-Reset"] = str(_seconds(_reset(top)))
    if not decision.allowed and decision.breached is not None:
        wait = decision.breached.retry_after
        headers["Retry-After"] = retry_after(wait if math.isfinite(wait) else top.window)
    return headers


def quota_threshold_crossed(
    used_before: int,
    used_after: int,
    limit: int,
    thresholds: Sequence[int] = WARNING_THRESHOLDS,
) -> int | None:
    """The highest percentage threshold a consume crossed, else ``None``.

    "Crossed" means ``used_before`` was below it and ``used_after`` reached it,
    so each threshold fires once per window however many consumes follow.
    Integer arithmetic: 8 of 10 is exactly 80 %, with no float wobble.
    """
    crossed: int | None = None
    for pct in sorted(thresholds):
        if used_before * 100 < pct * limit <= used_after * 100:
            crossed = pct
    return crossed


def quota_warning_value(name: str, threshold: int, used: int, limit: int) -> str:
    """A ``Keel-Quota-Warning`` member: ``"exports-daily";pct=80;used=4;q=5``."""
    return f"{sf_string(name)};pct={threshold};used={used};q={limit}"


def quota_warning_headers(commits: Iterable[QuotaCommit]) -> dict[str, str]:
    """``Keel-Quota-Warning`` for the quotas that crossed a threshold on this request."""
    members = [
        quota_warning_value(c.name, c.crossed, c.used, c.limit)
        for c in commits
        if c.crossed is not None
    ]
    return {"Keel-Quota-Warning": ", ".join(members)} if members else {}
