"""Read statements built once, and run on the driver connection underneath SQLAlchemy.

A hot read rebuilt for every request pays for its Core construction (a
subquery's column proxies, the coercion of every clause) and for SQLAlchemy's
cache key of the new object each time; run through SQLAlchemy it then pays for
a ``Connection``, an execution context, a result object and its rows. On
``GET /v1/recognitions`` those were about two thirds of the request's CPU, more
than the rest of the request path together (``bench/RESULTS.md``). A
:class:`PreparedRead` is built once — a module constant, or one per filter
shape — and :meth:`keel.db.engine.Database.fetch` runs it as one statement on
its own:

- with asyncpg or aiosqlite, as the SQL SQLAlchemy compiled for that dialect
  (once per statement), on the driver connection of a pooled one (asyncpg keeps
  it prepared per connection; aiosqlite runs it and fetches its rows in one hop
  to its thread). Parameters go through the same bind processors and the rows
  through the same result processors SQLAlchemy would apply (``UTCDateTime``
  normalises to UTC both ways; SQLite's text timestamps are parsed), so a row
  reads the same on either path; ``tests/integration/db/test_prepared_reads.py``
  holds them equal;
- with another driver, as the Core statement through SQLAlchemy, whose
  compiled cache the one statement object hits every time.

Only for statements whose result types' processing does not depend on the
driver's column type (strings, integers, ``UTCDateTime``), without an
expanding ``IN`` (refused when compiled: its SQL changes with each list).

A :class:`PreparedWrite` is the same for one ``INSERT`` or ``UPDATE …
RETURNING`` that its caller runs on the driver connection itself (the recognition
``INSERT`` on PostgreSQL, the SQLite idempotency claim and completion): compiled
once, its values bound as SQLAlchemy would bind them, its returned rows
processed the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Insert, Select, Update

Processor = Callable[[Any], Any]
DriverRows = Callable[[Any, str, list[Any]], Awaitable[Sequence[Sequence[Any]]]]
"""Runs compiled SQL with positional arguments on a driver connection; returns its records."""


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """A :class:`PreparedRead` compiled for one driver: its SQL with positional
    parameters, and what turns mappings into arguments and records into rows."""

    sql: str
    names: tuple[str, ...]
    """Bind parameter names, in the order of the SQL's ``$1, $2, …``."""
    binds: tuple[Processor | None, ...]
    results: tuple[Processor | None, ...]
    compiled_params: Callable[[Mapping[str, Any]], Mapping[str, Any]]
    """SQLAlchemy's own: every bind's value, a missing required one refused."""

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        values = self.compiled_params(params)
        return [
            values[name] if process is None else process(values[name])
            for name, process in zip(self.names, self.binds, strict=True)
        ]

    def rows(self, records: Sequence[Sequence[Any]]) -> Sequence[Sequence[Any]]:
        """The driver's records as SQLAlchemy would return them (indexable rows)."""
        if not any(self.results):
            return records
        processors = self.results
        return [
            tuple(
                value if process is None or value is None else process(value)
                for value, process in zip(record, processors, strict=True)
            )
            for record in records
        ]


Statement = TypeVar("Statement", bound=Select[Any] | Insert | Update)


class _Prepared(Generic[Statement]):
    """A Core statement built once, compiled once per dialect for its driver."""

    __slots__ = ("_forms", "statement")

    def __init__(self, statement: Statement) -> None:
        self.statement: Statement = statement
        self._forms: dict[str, DriverStatement] = {}

    def for_driver(self, dialect: Dialect) -> DriverStatement:
        """The statement compiled for ``dialect``'s driver (once per dialect)."""
        form = self._forms.get(dialect.name)
        if form is None:
            form = self._forms[dialect.name] = _compile(self.statement, dialect)
        return form


class PreparedRead(_Prepared[Select[Any]]):
    """A read-only Core ``SELECT``, built once, run by :meth:`Database.fetch`."""

    __slots__ = ()


class PreparedWrite(_Prepared[Insert | Update]):
    """An ``INSERT`` or ``UPDATE … RETURNING``, built once, which its caller runs on a
    driver connection: the hot write of a request (the recognition on PostgreSQL, in
    :func:`keel.db.engine.transaction_driver`'s transaction; the SQLite idempotency
    claim and completion) without the session's execution machinery, with the same
    SQL, bind and result processing as through SQLAlchemy."""

    __slots__ = ()


def _compile(statement: Select[Any] | Insert | Update, dialect: Dialect) -> DriverStatement:
    compiled = statement.compile(dialect=dialect)
    names = tuple(compiled.positiontup or ())
    binds = []
    for name in names:
        bind = compiled.binds[name]
        if bind.expanding:
            raise ValueError(f"a prepared statement takes no expanding parameter ({name!r})")
        binds.append(bind.type.dialect_impl(dialect).bind_processor(dialect))
    results = tuple(
        column.type.dialect_impl(dialect).result_processor(dialect, None)
        for column in statement.exported_columns  # a SELECT's columns, or RETURNING's
    )

    def compiled_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
        return compiled.construct_params(dict(params))

    return DriverStatement(compiled.string, names, tuple(binds), results, compiled_params)


async def _asyncpg_rows(driver: Any, sql: str, arguments: list[Any]) -> Sequence[Sequence[Any]]:
    records: Sequence[Sequence[Any]] = await driver.fetch(sql, *arguments)
    return records


async def _aiosqlite_rows(driver: Any, sql: str, arguments: list[Any]) -> Sequence[Sequence[Any]]:
    # One hop to aiosqlite's thread for the statement and its rows, not one for each.
    records: Sequence[Sequence[Any]] = await driver.execute_fetchall(sql, arguments)
    return records


def driver_rows(url: str) -> DriverRows | None:
    """How a prepared read runs on the driver of a database at ``url`` (None: through
    SQLAlchemy, for drivers without a hot path here)."""
    if url.startswith("postgresql+asyncpg"):
        return _asyncpg_rows
    if url.startswith("sqlite+aiosqlite"):
        return _aiosqlite_rows
    return None
