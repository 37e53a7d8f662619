"""The rate-limit policy: a TOML file turned into typed, validated rules.

The policy is data operators review, so it lives in a commented TOML file
(``keel/guard/default_policy.toml`` ships the defaults) and is checked hard at
start-up: a bad file is refused with a message naming the offending line,
whether the fault is TOML syntax (``tomllib`` reports it) or meaning — an
unknown key type, a negative number, a duplicate name — found by mapping the
validation error's location back onto the text.

Rules carry their base numbers; :func:`effective_limit` applies the plan
multiplier and an organisation's override to give the numbers enforced.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from keel.guard.ratelimit.errors import PolicyError
from keel.guard.ratelimit.gcra import Rate
from keel.guard.ratelimit.quota import QuotaWindow, WindowPeriod

Plan = Literal["free", "team", "enterprise"]
KeyKind = Literal["user", "org", "ip", "token"]
Principal = Literal["any", "anonymous", "authenticated"]

_MIN_EMISSION_INTERVAL = 0.001
"""Seconds; keeps the GCRA comparison tolerance (1 µs) far below one cell."""

_METHODS = "GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS"
_TARGET = re.compile(
    # "*" (every request) | a route template: "POST /v1/recognitions"
    # | an operation name: "recognitions.create", or a prefix: "admin.*"
    rf"^\*$"
    rf"|^(?:{_METHODS}) /[A-Za-z0-9_{{}}/.:*-]*$"
    r"|^[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*(?:\.\*)?$"
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlanMultipliers(_Model):
    """How much of a limit each plan gets, relative to the rule's base numbers."""

    free: float = Field(default=1.0, gt=0)
    team: float = Field(default=1.0, gt=0)
    enterprise: float = Field(default=1.0, gt=0)

    def for_plan(self, plan: Plan) -> float:
        return float(getattr(self, plan))


class _RuleBase(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9._-]{0,62}$")
    description: str = ""
    key: KeyKind
    applies_to: tuple[str, ...] = Field(min_length=1)
    principal: Principal = "any"
    limit: int = Field(gt=0)
    plans: PlanMultipliers | None = None

    @field_validator("applies_to")
    @classmethod
    def _targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for target in value:
            if not _TARGET.match(target):
                raise ValueError(
                    f"{target!r} is neither '*', a route template like 'POST /v1/things'"
                    " nor an operation name like 'things.create' or 'admin.*'"
                )
        return value

    def applies(self, *, route: str | None, operation: str | None) -> bool:
        """Does this rule cover a request with this route template or operation?"""
        for target in self.applies_to:
            if target == "*" or target in (route, operation):
                return True
            if target.endswith("*") and any(
                t is not None and t.startswith(target[:-1]) for t in (route, operation)
            ):
                return True
        return False


class RateRule(_RuleBase):
    """``limit`` requests per ``period_seconds``, smoothed by GCRA, ``burst`` at once."""

    algorithm: Literal["rate"]
    period_seconds: float = Field(gt=0)
    burst: int = Field(gt=0)

    @field_validator("period_seconds")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("period_seconds must be finite")
        return value

    @model_validator(mode="after")
    def _interval(self) -> RateRule:
        if self.period_seconds / self.limit < _MIN_EMISSION_INTERVAL:
            raise ValueError(
                f"more than {1 / _MIN_EMISSION_INTERVAL:.0f} requests a second per key"
                " is beyond what this limiter resolves; use a longer period"
            )
        return self


class QuotaRule(_RuleBase):
    """``limit`` successes per calendar ``window`` in the organisation's time zone."""

    algorithm: Literal["quota"]
    window: WindowPeriod


LimitRule = Annotated[RateRule | QuotaRule, Field(discriminator="algorithm")]


class LimitOverride(_Model):
    """An organisation's own numbers for one rule (from the org record or the file).

    ``limit``/``burst`` replace the base numbers outright (no plan multiplier:
    an override is a negotiated figure); ``multiplier`` scales them instead;
    ``enabled = false`` lifts the rule for that organisation.
    """

    limit: int | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, gt=0)
    multiplier: float | None = Field(default=None, gt=0)
    enabled: bool = True


class Policy(_Model):
    """A whole policy file: plan multipliers, the rules, per-org overrides."""

    version: Literal[1]
    plans: PlanMultipliers = PlanMultipliers()
    limits: tuple[LimitRule, ...] = ()
    overrides: dict[str, dict[str, LimitOverride]] = Field(default_factory=dict)

    def rule(self, name: str) -> RateRule | QuotaRule:
        for rule in self.limits:
            if rule.name == name:
                return rule
        raise KeyError(name)

    def overrides_for(self, org_id: str | None) -> Mapping[str, LimitOverride]:
        return self.overrides.get(org_id, {}) if org_id is not None else {}


@dataclass(frozen=True, slots=True)
class EffectiveLimit:
    """A rule with the numbers enforced for one plan and organisation."""

    rule: RateRule | QuotaRule
    limit: int
    burst: int | None

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def rate(self) -> Rate:
        """The GCRA parameters (rate rules only)."""
        if not isinstance(self.rule, RateRule) or self.burst is None:
            raise TypeError(f"{self.rule.name} is not a rate rule")
        return Rate(self.limit, self.rule.period_seconds, self.burst)

    def window(self, timezone: str) -> QuotaWindow:
        """The calendar window in ``timezone`` (quota rules only)."""
        if not isinstance(self.rule, QuotaRule):
            raise TypeError(f"{self.rule.name} is not a quota rule")
        return QuotaWindow(self.rule.window, timezone)


def effective_limit(
    limit: RateRule | QuotaRule, plan: Plan, override: LimitOverride | None = None
) -> EffectiveLimit | None:
    """The numbers enforced for ``plan``, after an organisation's ``override``.

    ``None`` means the override disables the rule. Scaled numbers round down
    (a limit is a promise not to exceed) but never below 1.
    """
    if override is not None and not override.enabled:
        return None
    multiplier = (limit.plans or PlanMultipliers()).for_plan(plan)
    if override is not None and override.multiplier is not None:
        multiplier *= override.multiplier

    def scale(base: int, replacement: int | None) -> int:
        if replacement is not None:
            return replacement
        return max(1, math.floor(base * multiplier + 1e-9))

    count = scale(limit.limit, override.limit if override else None)
    if isinstance(limit, RateRule):
        burst = scale(limit.burst, override.burst if override else None)
        return EffectiveLimit(limit, count, burst)
    return EffectiveLimit(limit, count, None)


# --- loading -------------------------------------------------------------------


def default_policy() -> Policy:
    """The policy shipped in ``keel/guard/default_policy.toml``."""
    text = resources.files("keel.guard").joinpath("default_policy.toml").read_text("utf-8")
    return parse_policy(text, source="keel/guard/default_policy.toml")


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file; :class:`PolicyError` names the bad line."""
    path = Path(path)
    return parse_policy(path.read_text("utf-8"), source=str(path))


def policy_from(path: str | Path | None) -> Policy:
    """The policy at ``path`` (``KEEL_RATELIMIT_POLICY``), else the shipped one."""
    return load_policy(path) if path else default_policy()


_SYNTAX_AT = re.compile(r"\(at line (\d+), column \d+\)")


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    """Validate policy TOML ``text``; ``source`` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11 has no .lineno on the exception; the message carries it.
        found = _SYNTAX_AT.search(str(exc))
        message = _SYNTAX_AT.sub("", str(exc)).strip()
        raise PolicyError(
            f"TOML syntax: {message}", source=source, line=int(found.group(1)) if found else None
        ) from None
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        # A misspelt field also reports the real one as missing; the misspelling
        # is the line worth showing.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        error = errors[0]
        loc = tuple(error["loc"])
        if error["type"] == "union_tag_invalid":
            loc = (*loc, "algorithm")
        field = ".".join(str(part) for part in loc) or "(file)"
        raise PolicyError(
            f"{field}: {error['msg']}", source=source, line=_locate(text, loc)
        ) from None
    _check_names(policy, text, source)
    return _with_default_plans(policy)


def _check_names(policy: Policy, text: str, source: str) -> None:
    seen: set[str] = set()
    for index, rule in enumerate(policy.limits):
        if rule.name in seen:
            raise PolicyError(
                f"duplicate limit name {rule.name!r}",
                source=source,
                line=_locate(text, ("limits", index, "name")),
            )
        seen.add(rule.name)
    for org, rules in policy.overrides.items():
        for name in rules:
            if name not in seen:
                raise PolicyError(
                    f"override for unknown limit {name!r}",
                    source=source,
                    line=_locate(text, ("overrides", org, name)),
                )


def _with_default_plans(policy: Policy) -> Policy:
    # Rules without their own multipliers take the file's; resolved once here
    # so effective_limit needs only the rule.
    limits = tuple(
        rule if rule.plans is not None else rule.model_copy(update={"plans": policy.plans})
        for rule in policy.limits
    )
    return policy.model_copy(update={"limits": limits})


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


def _split_dotted(path: str) -> tuple[str, ...]:
    parts = re.findall(r""""([^"]*)"|'([^']*)'|([^.\s]+)""", path)
    return tuple(next(p for p in groups if p) for groups in parts)


def _line_index(text: str) -> dict[tuple[Any, ...], int]:
    """Where each table and key starts: path (with array indexes) -> 1-based line."""
    index: dict[tuple[Any, ...], int] = {}
    counts: dict[tuple[str, ...], int] = {}
    table: tuple[Any, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        header = _HEADER.match(line)
        if header:
            names = _split_dotted(header.group(2))
            if header.group(1) == "[[":
                position = counts.get(names, 0)
                counts[names] = position + 1
                table = (*names, position)
            else:
                table = names
            index.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            index.setdefault((*table, key.group(1).strip("\"'")), number)
    return index


def _locate(text: str, loc: tuple[Any, ...]) -> int | None:
    """The line of the longest known prefix of a validation error's location.

    Discriminated unions put the tag (``"rate"``/``"quota"``) in the location
    after the list index; it is not in the text, so it is skipped.
    """
    index = _line_index(text)
    path = loc
    if len(loc) > 2 and loc[0] == "limits" and loc[2] in ("rate", "quota"):
        path = loc[:2] + loc[3:]
    for end in range(len(path), 0, -1):
        if path[:end] in index:
            return index[path[:end]]
    return None
