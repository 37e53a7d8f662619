"""The job queue's import boundaries, read from the source (no I/O).

Two rules keep ``keel.jobs`` in its shape: it knows nothing of HTTP (the queue runs
in ``keel worker`` processes with no web framework in them), and the queue's SQL
runs in one place, ``keel.jobs.sql`` — every other module reaches the store
through the :class:`~keel.jobs.connector.JobConnector` seam.
"""

from __future__ import annotations

import ast
from pathlib import Path

import keel.jobs

JOBS = Path(keel.jobs.__file__).parent
HTTP_MODULES = ("fastapi", "starlette", "keel.api", "keel.http")
# Where the named statements of ``keel.jobs.queries`` may be imported.
SQL_HOME = JOBS / "sql"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _modules() -> list[Path]:
    return sorted(JOBS.rglob("*.py"))


def test_the_job_queue_imports_nothing_from_the_http_layer() -> None:
    offenders = {
        str(path.relative_to(JOBS)): sorted(
            name for name in _imports(path) if name.startswith(HTTP_MODULES)
        )
        for path in _modules()
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_only_the_sql_store_uses_the_named_statements() -> None:
    users = sorted(
        str(path.relative_to(JOBS))
        for path in _modules()
        if SQL_HOME not in path.parents
        and any(name.startswith("keel.jobs.queries") for name in _imports(path))
    )
    assert users == []


def test_the_worker_and_its_helpers_import_no_sqlalchemy_execution() -> None:
    """The worker, scheduler, dead-lettering, metrics and health hold no engine,
    connection or statement of their own: only the seam (an ``on_dead`` hook's
    session type and the errors a store may raise are all they name)."""
    seam_users = ["worker.py", "schedule.py", "dead_letter.py", "metrics.py", "health.py"]
    executing = {
        name: sorted(
            imported
            for imported in _imports(JOBS / name)
            if imported.startswith(("sqlalchemy", "asyncpg"))
            and imported != "sqlalchemy.ext.asyncio.AsyncSession"
            and not imported.startswith("sqlalchemy.exc.")
        )
        for name in seam_users
    }
    assert {name: found for name, found in executing.items() if found} == {}
