"""``keel.parity.compare``: which items count, which differ, and the divergence."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.parity import Difference, Environment, compare


def _environment(**changes: Any) -> Environment:
    version: dict[str, Any] = {
        "version": "1.0",
        "schema_revision": "0013",
        "schema_head": "0013",
        "settings_fingerprint": {
            "names": ["auth_cache_seconds", "release_id"],
            "hash": "h",
            "settings": {"auth_cache_seconds": "aaaa", "release_id": "bbbb"},
            "key_id": "k1",
        },
        "dependencies": {"database": "postgresql", "redis": "redis"},
        "limit_policy_hash": "p1",
        "slo_rules_hash": "s1",
    }
    health = {"status": changes.pop("health_status", "pass")}
    version.update(changes)
    return Environment("http://x", version, health)


def test_identical_environments_compare_every_item_and_differ_in_none() -> None:
    report = compare(_environment(), _environment())
    # 3 top-level, 2 hashes, 2 settings, 2 dependencies, health status
    assert report.compared == 10
    assert report.differences == ()
    assert report.divergence_percent == 0.0
    assert not report.exceeds(0)


def test_each_difference_is_listed_with_both_values_and_counted() -> None:
    b = _environment(version="1.1", slo_rules_hash=None, health_status="warn")
    b.version["dependencies"]["database"] = "sqlite"
    report = compare(_environment(), b)
    assert report.differences == (
        Difference("dependency:database", "postgresql", "sqlite"),
        Difference("health:status", "pass", "warn"),
        Difference("slo_rules", "s1", None),
        Difference("version", "1.0", "1.1"),
    )
    assert report.divergence_percent == pytest.approx(40.0)
    assert report.exceeds(5)
    assert not report.exceeds(40)  # "above" the threshold, not at it


def test_a_setting_only_one_side_has_and_a_changed_fingerprint_are_differences() -> None:
    b = _environment()
    fingerprint = b.version["settings_fingerprint"]
    fingerprint["names"] = [*fingerprint["names"], "new_setting"]
    fingerprint["settings"] = {**fingerprint["settings"], "new_setting": "cccc"}
    fingerprint["settings"]["release_id"] = "dddd"
    report = compare(_environment(), b)
    assert report.differences == (
        Difference("setting:new_setting", None, "cccc"),
        Difference("setting:release_id", "bbbb", "dddd"),
    )
    assert report.compared == 11


def test_ignored_items_are_neither_compared_nor_counted() -> None:
    report = compare(_environment(), _environment(version="2"), ignore=["version"])
    assert (report.compared, report.differences) == (9, ())


def test_with_different_fingerprint_keys_only_setting_names_are_compared() -> None:
    b = _environment()
    b.version["settings_fingerprint"]["key_id"] = "k2"
    b.version["settings_fingerprint"]["settings"] = {"auth_cache_seconds": "x", "release_id": "y"}
    report = compare(_environment(), b)
    assert report.differences == ()
    assert "different keys" in report.notes[0]


def test_an_item_neither_side_reports_is_not_compared() -> None:
    a, b = _environment(), _environment()
    for environment in (a, b):
        del environment.version["limit_policy_hash"]  # two older servers
    assert compare(a, b).compared == 9


_SETTINGS = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "e"]), st.sampled_from(["1", "2"]), max_size=5
)


@given(_SETTINGS, _SETTINGS)
def test_comparison_is_symmetric_and_divergence_is_the_differing_share(
    left: dict[str, str], right: dict[str, str]
) -> None:
    def environment(settings: dict[str, str]) -> Environment:
        fingerprint = {"names": sorted(settings), "settings": settings, "key_id": "k"}
        return Environment("http://x", {"version": "1", "settings_fingerprint": fingerprint}, {})

    forth = compare(environment(left), environment(right))
    back = compare(environment(right), environment(left))
    assert [(d.item, d.a, d.b) for d in forth.differences] == [
        (d.item, d.b, d.a) for d in back.differences
    ]
    assert forth.compared == 1 + len(set(left) | set(right))
    changed = {k for k in set(left) | set(right) if left.get(k) != right.get(k)}
    assert {d.item for d in forth.differences} == {f"setting:{k}" for k in changed}
    assert forth.divergence_percent == pytest.approx(100 * len(changed) / forth.compared)
