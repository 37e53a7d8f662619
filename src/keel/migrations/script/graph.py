"""The revision files as data: order, checksums, declared kind, lint exceptions.

Alembic's ``ScriptDirectory`` is the graph; this module adds what the safe
runner needs to know about each file. Two things are read from comments in
the revision, so they sit next to the code they describe:

``# keel-kind: expand`` (or ``contract``)
    Expand revisions are additive: code of the previous release keeps working
    on the new schema, so they may run before a deploy. Contract revisions
    remove or reshape what the previous release still uses and run only after
    every instance runs the new code.

``# keel-lint: allow RULE -- REASON``
    A justified exception to one lint rule (squawk's or Keel's) for this
    revision. The reason is mandatory; an exception without one is itself a
    lint error.

``# keel-transaction: none``
    The runner does not wrap this revision in its own transaction, so it can
    use ``op.get_context().autocommit_block()`` for ``CREATE INDEX
    CONCURRENTLY``. Keep such a revision to that one statement: what ran before
    a failure inside it stays committed.

The script location is a parameter everywhere so that tests can point the
runner at a temporary copy of the migrations holding sample revisions.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError

from keel.migrations.errors import UnknownRevision

SCRIPT_LOCATION = Path(__file__).parent
"""Alembic's script location: ``env.py``, ``script.py.mako`` and ``versions/`` sit here."""

_KIND = re.compile(r"^\s*#\s*keel-kind:\s*(?P<kind>\S+)\s*$", re.MULTILINE)
_NO_TRANSACTION = re.compile(r"^\s*#\s*keel-transaction:\s*none\s*$", re.MULTILINE)
_ALLOW = re.compile(r"^\s*#\s*keel-lint:\s*allow\s+(?P<rule>[a-z0-9-]+)(?P<rest>.*)$", re.MULTILINE)


class Kind(StrEnum):
    EXPAND = "expand"
    CONTRACT = "contract"


@dataclass(frozen=True)
class LintException:
    """A justified lint exception declared in a revision file."""

    rule: str
    reason: str


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    path: Path
    message: str
    checksum: str
    declared_kind: Kind | None
    kind_problem: str | None
    exceptions: tuple[LintException, ...]
    transactional: bool = True

    def allows(self, rule: str) -> bool:
        return any(item.rule == rule and item.reason for item in self.exceptions)


def alembic_config(url: str, script_location: Path | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location or SCRIPT_LOCATION))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def checksum(path: Path) -> str:
    """SHA-256 of the file with line endings normalised (a checkout on Windows is no edit)."""
    text = path.read_bytes().replace(b"\r\n", b"\n")
    return hashlib.sha256(text).hexdigest()


def _parse(script: Script) -> Revision:
    path = Path(script.path)
    text = path.read_text(encoding="utf-8")
    kinds = [match.group("kind") for match in _KIND.finditer(text)]
    declared: Kind | None = None
    problem: str | None = None
    if len(kinds) > 1:
        problem = "declares more than one keel-kind"
    elif kinds:
        try:
            declared = Kind(kinds[0])
        except ValueError:
            problem = f"keel-kind {kinds[0]!r} is neither 'expand' nor 'contract'"
    exceptions = []
    for match in _ALLOW.finditer(text):
        rest = match.group("rest").strip()
        reason = rest[2:].strip() if rest.startswith("--") else ""
        exceptions.append(LintException(rule=match.group("rule"), reason=reason))
    down = script.down_revision
    if isinstance(down, tuple | list):
        raise ValueError(f"revision {script.revision} merges branches; Keel keeps one line")
    return Revision(
        revision=script.revision,
        down_revision=down,
        path=path,
        message=(script.doc or "").strip(),
        checksum=checksum(path),
        declared_kind=declared,
        kind_problem=problem,
        exceptions=tuple(exceptions),
        transactional=_NO_TRANSACTION.search(text) is None,
    )


class Scripts:
    """The ordered revisions of one script directory (base first)."""

    def __init__(self, script_location: Path | None = None) -> None:
        self.location = script_location or SCRIPT_LOCATION
        self.directory = ScriptDirectory.from_config(alembic_config("sqlite://", self.location))

    def config(self, url: str) -> Config:
        return alembic_config(url, self.location)

    @property
    def head(self) -> str | None:
        return self.directory.get_current_head()

    def all(self) -> list[Revision]:
        """Every revision, oldest first."""
        ordered = list(self.directory.walk_revisions("base", "heads"))
        ordered.reverse()
        return [_parse(script) for script in ordered]

    def get(self, revision: str) -> Revision:
        return _parse(self._script(revision))

    def _script(self, revision: str) -> Script:
        try:
            script = self.directory.get_revision(revision)
        except (CommandError, ResolutionError) as error:
            raise UnknownRevision(f"no revision {revision!r} in {self.location}") from error
        if script is None:
            raise UnknownRevision(f"no revision {revision!r} in {self.location}")
        return script

    def applied(self, current: str | None) -> list[Revision]:
        """Revisions at or below ``current``, oldest first."""
        if current is None:
            return []
        chain = [_parse(s) for s in self.directory.iterate_revisions(current, "base")]
        chain.reverse()
        return chain

    def pending(self, current: str | None, target: str = "heads") -> list[Revision]:
        """Revisions above ``current`` up to ``target``, oldest first."""
        upper = self.head if target in ("head", "heads") else self._script(target).revision
        if upper is None:
            return []
        chain = [_parse(s) for s in self.directory.iterate_revisions(upper, current or "base")]
        chain.reverse()
        return [item for item in chain if item.revision != current]

    def between(self, current: str | None, target: str) -> list[Revision]:
        """Revisions a downgrade from ``current`` to ``target`` undoes, newest first."""
        if current is None:
            return []
        lower = None if target == "base" else self._script(target).revision
        chain = [_parse(s) for s in self.directory.iterate_revisions(current, lower or "base")]
        return [item for item in chain if item.revision != lower]

    def next_id(self) -> str:
        numbers = [int(item.revision) for item in self.all() if item.revision.isdigit()]
        return f"{max(numbers, default=0) + 1:04d}"
