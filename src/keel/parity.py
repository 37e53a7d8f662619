"""Parity: do two environments run the same thing, configured the same way?

Staging is only a rehearsal of production if it runs the same build on the
same schema with the same settings, dependencies, limits and alerts. ``keel
parity URL_A URL_B`` reads both environments' ``/version`` and ``/health`` and
compares them item by item:

- ``version``, ``schema_revision``, ``schema_head``;
- ``setting:<name>`` for every setting either side has: its keyed fingerprint
  (never the value), or its mere presence when the two sides fingerprint with
  different keys (``KEEL_FINGERPRINT_KEY`` must be shared to compare values);
- ``dependency:<kind>`` (database, redis, breaker_store, storage, tracing);
- ``limit_policy`` and ``slo_rules`` (hashes);
- ``health:status``.

An item neither side reports (an older server) is not compared. The
divergence is the share of compared items that differ; above a threshold the
command fails, so a deploy pipeline can stop on drift. :func:`compare` is pure;
:func:`read_environment` is the only part that talks HTTP.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from keel.errors import KeelError

ABSENT = None
_TOP_LEVEL = ("version", "schema_revision", "schema_head")
_HASHES = {"limit_policy": "limit_policy_hash", "slo_rules": "slo_rules_hash"}


class ParityError(KeelError):
    """An environment could not be read (unreachable, or not a Keel ``/version``)."""

    title = "Environment unreadable"


@dataclass(frozen=True, slots=True)
class Environment:
    """What one environment says about itself: ``/version``'s and ``/health``'s bodies."""

    url: str
    version: Mapping[str, Any]
    health: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Difference:
    item: str
    a: str | None
    b: str | None


@dataclass(frozen=True, slots=True)
class ParityReport:
    compared: int
    differences: tuple[Difference, ...]
    notes: tuple[str, ...] = ()

    @property
    def divergence_percent(self) -> float:
        return 100.0 * len(self.differences) / self.compared if self.compared else 0.0

    def exceeds(self, threshold_percent: float) -> bool:
        return self.divergence_percent > threshold_percent

    def as_json(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "divergence_percent": round(self.divergence_percent, 2),
            "differences": [{"item": d.item, "a": d.a, "b": d.b} for d in self.differences],
            "notes": list(self.notes),
        }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _items(environment: Environment, *, with_values: bool) -> dict[str, str | None]:
    """The comparable items of one environment: item name → value (None: reported as null)."""
    version = environment.version
    items: dict[str, str | None] = {}
    for key in _TOP_LEVEL:
        if key in version:
            items[key] = _text(version[key])
    for item, key in _HASHES.items():
        if key in version:
            items[item] = _text(version[key])
    fingerprint = version.get("settings_fingerprint") or {}
    hashes = fingerprint.get("settings") or {}
    for name in fingerprint.get("names") or hashes:
        items[f"setting:{name}"] = _text(hashes.get(name)) if with_values else "present"
    for kind, value in (version.get("dependencies") or {}).items():
        items[f"dependency:{kind}"] = _text(value)
    if "status" in environment.health:
        items["health:status"] = _text(environment.health["status"])
    return items


def _key_id(environment: Environment) -> str | None:
    fingerprint = environment.version.get("settings_fingerprint") or {}
    return _text(fingerprint.get("key_id"))


def compare(a: Environment, b: Environment, *, ignore: Collection[str] = ()) -> ParityReport:
    """Every item either environment reports, compared; ``ignore`` names items to skip."""
    notes: list[str] = []
    same_key = _key_id(a) is not None and _key_id(a) == _key_id(b)
    if not same_key:
        notes.append(
            "the environments fingerprint settings with different keys (or do not say which): "
            "only setting names were compared; share KEEL_FINGERPRINT_KEY to compare values"
        )
    left, right = _items(a, with_values=same_key), _items(b, with_values=same_key)
    names = sorted((set(left) | set(right)) - set(ignore))
    differences = tuple(
        Difference(name, left.get(name, ABSENT), right.get(name, ABSENT))
        for name in names
        if left.get(name, ABSENT) != right.get(name, ABSENT)
    )
    return ParityReport(len(names), differences, tuple(notes))


async def read_environment(client: httpx.AsyncClient, base_url: str) -> Environment:
    """GET ``/version`` and ``/health`` (a failing ``/health`` still says its status)."""
    base = base_url.rstrip("/")
    bodies: dict[str, Mapping[str, Any]] = {}
    for path, accepted in (("/version", {200}), ("/health", {200, 503})):
        try:
            response = await client.get(base + path)
        except httpx.HTTPError as error:
            raise ParityError(f"{base}{path}: {type(error).__name__}: {error}") from None
        if response.status_code not in accepted:
            raise ParityError(f"{base}{path} answered {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise ParityError(f"{base}{path} did not answer JSON") from None
        if not isinstance(body, dict):
            raise ParityError(f"{base}{path} did not answer a JSON object")
        bodies[path] = body
    if "version" not in bodies["/version"]:
        raise ParityError(f"{base}/version is not a Keel version document")
    return Environment(base, bodies["/version"], bodies["/health"])


async def parity(
    url_a: str,
    url_b: str,
    *,
    ignore: Collection[str] = (),
    request_seconds: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ParityReport:
    """Read both environments (each request bounded by ``request_seconds``) and compare them."""
    async with httpx.AsyncClient(timeout=request_seconds, transport=transport) as client:
        a = await read_environment(client, url_a)
        b = await read_environment(client, url_b)
    return compare(a, b, ignore=ignore)


__all__ = [
    "Difference",
    "Environment",
    "ParityError",
    "ParityReport",
    "compare",
    "parity",
    "read_environment",
]
