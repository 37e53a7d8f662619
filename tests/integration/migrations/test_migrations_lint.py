"""``keel migrate lint``: squawk and Keel's own checks on real and sample revisions."""

from __future__ import annotations

from pathlib import Path

from tests.support.migration_samples import (
    CONCURRENT_INDEX,
    DANGEROUS,
    HEAD,
    SAFE_EXPAND,
    add_revision,
    migrations_copy,
)

from keel import migrations
from keel.migrations import Kind, Timeouts

TIMEOUTS = Timeouts(lock_timeout_seconds=5, statement_timeout_seconds=600)


def _rules(report: migrations.LintReport, revision: str) -> set[str]:
    return {
        finding.rule
        for item in report.revisions
        if item.revision.revision == revision
        for finding in item.findings
    }


def test_the_real_migrations_of_keel_pass_lint() -> None:
    report = migrations.lint(timeouts=TIMEOUTS)

    assert report.ok, report.findings
    assert report.revisions[0].revision.revision == "0001"
    first = report.revisions[0]
    assert first.kind is Kind.EXPAND
    # 0001's exceptions are declared with reasons, and squawk is told to skip them.
    assert {item.rule for item in first.revision.exceptions} == {
        "prefer-text-field",
        "prefer-bigint-over-int",
    }


def test_squawk_flags_a_dangerous_revision(tmp_path: Path) -> None:
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", DANGEROUS)

    report = migrations.lint(timeouts=TIMEOUTS, script_location=location, revisions=["s002"])

    rules = _rules(report, "s002")
    assert not report.ok
    assert {
        "adding-required-field",
        "require-concurrent-index-creation",
        "ban-drop-column",
        "changing-column-type",
    } <= rules
    # ... and Keel's own checks, which squawk cannot make:
    assert {"keel-missing-downgrade", "keel-whole-table-update", "keel-kind"} <= rules


def test_squawk_passes_a_safe_revision(tmp_path: Path) -> None:
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", SAFE_EXPAND)

    report = migrations.lint(timeouts=TIMEOUTS, script_location=location, revisions=["s002"])

    assert report.ok, report.findings
    assert report.revisions[0].kind is Kind.EXPAND


def test_squawk_sees_missing_timeouts_when_the_runner_would_not_set_them(tmp_path: Path) -> None:
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", SAFE_EXPAND)
    revision = migrations.Scripts(location).get("s002")

    from keel.migrations.lint import run_squawk  # noqa: PLC0415
    from keel.migrations.sql import render  # noqa: PLC0415

    bare = {hit["rule_name"] for hit in run_squawk(render(revision, script_location=location))}
    timed = run_squawk(render(revision, timeouts=TIMEOUTS, script_location=location))

    assert {"require-lock-timeout", "require-statement-timeout"} <= bare
    assert timed == []


def test_a_justified_exception_silences_exactly_its_rule(tmp_path: Path) -> None:
    location = migrations_copy(tmp_path)
    body = DANGEROUS.replace(
        "# keel-kind: expand",
        "# keel-kind: contract\n"
        "# keel-lint: allow ban-drop-column -- role moved to memberships in 0001b\n"
        "# keel-lint: allow changing-column-type",
    )
    add_revision(location, "s002", body)

    report = migrations.lint(timeouts=TIMEOUTS, script_location=location, revisions=["s002"])

    rules = _rules(report, "s002")
    assert "ban-drop-column" not in rules
    assert "changing-column-type" in rules  # no reason given: not an exception
    assert "keel-lint-exception" in rules
    assert "keel-kind" not in rules  # declared contract: dropping is what contracts do


def test_an_expand_revision_that_drops_a_column_is_not_expand(tmp_path: Path) -> None:
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", DANGEROUS)

    report = migrations.lint(
        timeouts=TIMEOUTS, script_location=location, revisions=["s002"], use_squawk=False
    )

    item = report.revisions[0]
    assert item.kind is Kind.EXPAND  # what it says it is ...
    assert item.inferred_kind is Kind.CONTRACT  # ... and what it is
    messages = [f.message for f in item.findings if f.rule == "keel-kind"]
    assert any("drops a column" in message for message in messages)


def test_an_edited_applied_revision_fails_lint(tmp_path: Path) -> None:
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", SAFE_EXPAND)

    report = migrations.lint(
        timeouts=TIMEOUTS,
        script_location=location,
        applied_checksums={"s002": "0" * 64},
        use_squawk=False,
    )

    assert _rules(report, "s002") == {"keel-edited-after-apply"}


def test_plan_shows_sql_locks_and_risks(tmp_path: Path) -> None:
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", DANGEROUS)

    found = migrations.plan(HEAD, timeouts=TIMEOUTS, script_location=location)

    assert [item.revision for item in found.revisions] == ["s002"]
    planned = found.revisions[0]
    assert "ALTER TABLE users ADD COLUMN badge TEXT NOT NULL" in planned.sql
    assert "SET LOCAL lock_timeout = '5000ms'" in planned.sql
    assert any(note.table == "users" and note.lock.startswith("SHARE") for note in planned.locks)
    assert found.risky
    assert found.kinds == {Kind.EXPAND}


def test_new_writes_a_revision_of_the_requested_kind_on_top_of_head(tmp_path: Path) -> None:
    from datetime import UTC, datetime  # noqa: PLC0415

    location = migrations_copy(tmp_path)

    path = migrations.new_revision(
        "Add nickname",
        Kind.EXPAND,
        now=datetime(2026, 11, 29, tzinfo=UTC),
        script_location=location,
    )

    expected = f"{int(HEAD) + 1:04d}"
    assert path.name == f"{expected}_add_nickname.py"
    revision = migrations.Scripts(location).get(expected)
    assert revision.down_revision == HEAD
    assert revision.declared_kind is Kind.EXPAND
    report = migrations.lint(
        timeouts=TIMEOUTS, script_location=location, revisions=[expected], use_squawk=False
    )
    # An unfilled template never passes: neither step does anything yet.
    assert {"keel-offline-sql", "keel-missing-downgrade"} <= _rules(report, expected)


def test_a_concurrent_index_outside_a_transaction_passes_lint(tmp_path: Path) -> None:
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", CONCURRENT_INDEX)

    report = migrations.lint(timeouts=TIMEOUTS, script_location=location, revisions=["s002"])

    assert report.ok, report.findings
    assert not report.revisions[0].revision.transactional


def test_pending_kinds_calls_only_honest_expand_revisions_expand(tmp_path: Path) -> None:
    location = migrations_copy(tmp_path)
    add_revision(location, "s002", SAFE_EXPAND)
    add_revision(location, "s003", DANGEROUS, down="s002")  # says expand, drops a column
    add_revision(location, "s004", CONCURRENT_INDEX, down="s003")

    kinds = migrations.pending_kinds(HEAD, script_location=location)

    assert kinds == [("s002", Kind.EXPAND), ("s003", Kind.CONTRACT), ("s004", Kind.EXPAND)]
