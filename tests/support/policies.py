"""Limit policies for tests whose subject is something else than limits."""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path

_GENEROUS = """
version = 1
[[limits]]
name = "api-user"
key = "user"
applies_to = ["*"]
algorithm = "rate"
limit = {limit}
period_seconds = 60
burst = {burst}
"""
GENEROUS_POLICY = _GENEROUS.format(limit=10000, burst=1000)


def generous_policy(workdir: Path, *, limit: int = 10000, burst: int = 1000) -> Path:
    """A policy file under which only the behaviour under test can refuse a request
    (a load test raises ``limit`` and ``burst`` to stay under them)."""
    path = workdir / "generous-policy.toml"
    path.write_text(_GENEROUS.format(limit=limit, burst=burst))
    return path


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for the plain text a policy holds
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def shipped_policy_with_ip_limits_lifted(workdir: Path, *, factor: int = 1000) -> Path:
    """The shipped default policy, its per-IP limits multiplied by ``factor``.

    Per-organisation and per-user limits are lifted for one principal with
    ``keel limits set-override ORG NAME 0``; limits keyed by IP have no such
    override, and every test client is 127.0.0.1, so they are raised here instead.
    """
    shipped = tomllib.loads(
        resources.files("keel.guard").joinpath("default_policy.toml").read_text()
    )
    lines = [f"version = {shipped['version']}", "", "[plans]"]
    lines += [f"{plan} = {_toml_value(scale)}" for plan, scale in shipped["plans"].items()]
    for shipped_rule in shipped["limits"]:
        rule = dict(shipped_rule)
        if rule["key"] == "ip":
            rule.update(limit=rule["limit"] * factor, burst=rule["burst"] * factor)
        lines += ["", "[[limits]]"]
        lines += [f"{name} = {_toml_value(value)}" for name, value in rule.items()]
    path = workdir / "ip-lifted-policy.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
