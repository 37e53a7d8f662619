"""The statement analysis behind plan and lint: pure functions over SQL text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.migrations import Kind
from keel.migrations.sql import (
    Timeouts,
    contract_reasons,
    inferred_kind,
    locks,
    statements,
    whole_table_writes,
)

OFFLINE = """BEGIN;
SET LOCAL lock_timeout = '5000ms';

-- Running upgrade 0001 -> 0002

ALTER TABLE users ADD COLUMN nickname TEXT;

UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001';

COMMIT;
"""


def test_statements_drop_comments_transaction_control_and_version_bookkeeping() -> None:
    assert statements(OFFLINE) == ["ALTER TABLE users ADD COLUMN nickname TEXT"]


def test_timeouts_render_in_milliseconds_local_or_session_wide() -> None:
    timeouts = Timeouts(lock_timeout_seconds=2.5, statement_timeout_seconds=600)
    assert timeouts.statements() == [
        "SET LOCAL lock_timeout = '2500ms'",
        "SET LOCAL statement_timeout = '600000ms'",
    ]
    assert timeouts.statements(local=False)[0] == "SET lock_timeout = '2500ms'"


@pytest.mark.parametrize(
    ("sql", "table", "lock"),
    [
        ("CREATE INDEX ix ON users (email)", "users", "SHARE (blocks writes"),
        ("CREATE INDEX CONCURRENTLY ix ON users (email)", "users", "SHARE UPDATE EXCLUSIVE"),
        ("ALTER TABLE users ADD COLUMN x TEXT", "users", "ACCESS EXCLUSIVE"),
        (
            "ALTER TABLE users ADD CONSTRAINT fk FOREIGN KEY (org_id) REFERENCES orgs (id)",
            "users",
            "SHARE ROW EXCLUSIVE",
        ),
        ("ALTER TABLE users VALIDATE CONSTRAINT fk", "users", "SHARE UPDATE EXCLUSIVE"),
        ("UPDATE users SET x = 1 WHERE id = 'a'", "users", "ROW EXCLUSIVE"),
        ("DROP TABLE users", "users", "ACCESS EXCLUSIVE"),
    ],
)
def test_locks_name_the_table_and_the_mode(sql: str, table: str, lock: str) -> None:
    (note,) = locks(sql + ";")
    assert note.table == table
    assert note.lock.startswith(lock)


def test_an_index_on_a_table_created_in_the_same_revision_blocks_nobody() -> None:
    notes = locks("CREATE TABLE t (id TEXT); CREATE INDEX ix_t ON t (id);")
    assert notes[1].lock.startswith("table created in this revision")


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("DROP TABLE users", "drops a table"),
        ("ALTER TABLE users DROP COLUMN role", "drops a column"),
        ("ALTER TABLE users RENAME COLUMN a TO b", "renames"),
        ("ALTER TABLE users ALTER COLUMN a TYPE TEXT", "changes a column type"),
        ("ALTER TABLE users ALTER COLUMN a SET NOT NULL", "makes a column required"),
        ("ALTER TABLE users ADD COLUMN a TEXT NOT NULL", "adds a required column"),
    ],
)
def test_contract_statements_are_recognised(sql: str, reason: str) -> None:
    (found,) = contract_reasons(sql)
    assert found.startswith(reason)
    assert inferred_kind(sql) is Kind.CONTRACT


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE t (id TEXT)",
        "ALTER TABLE users ADD COLUMN a TEXT",
        "ALTER TABLE users ADD COLUMN a TEXT NOT NULL DEFAULT 'x'",
        "CREATE INDEX CONCURRENTLY ix ON users (a)",
        "ALTER TABLE users ADD CONSTRAINT c CHECK (a IS NOT NULL) NOT VALID",
    ],
)
def test_additive_statements_are_expand(sql: str) -> None:
    assert contract_reasons(sql) == []
    assert inferred_kind(sql) is Kind.EXPAND


def test_whole_table_writes_are_updates_and_deletes_without_where() -> None:
    sql = (
        "UPDATE users SET a = 1;"
        " UPDATE users SET a = 1 WHERE id IN (SELECT id FROM users LIMIT 10);"
        " DELETE FROM users; DELETE FROM users WHERE a IS NULL;"
    )
    assert whole_table_writes(sql) == ["UPDATE users SET a = 1", "DELETE FROM users"]


_identifier = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)


@given(table=_identifier, column=_identifier, key=_identifier)
def test_a_bounded_update_is_never_a_whole_table_write(table: str, column: str, key: str) -> None:
    sql = f"UPDATE {table} SET {column} = NULL WHERE {key} IS NOT NULL;"
    assert whole_table_writes(sql) == []
    assert whole_table_writes(sql.split(" WHERE", maxsplit=1)[0] + ";") != []
