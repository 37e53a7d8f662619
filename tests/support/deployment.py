"""What the deployment tests share: the repository's deploy files, the tools that check them,
and the two facts every deploy file must agree with — Keel's settings and its CLI.

The deploy files (Dockerfile, compose.yaml, deploy/) name ``KEEL_*`` settings and ``keel``
command lines; a typo in either would only show on a cluster. So each name is checked against
``Settings`` and each command line is parsed by the real ``keel`` command, without running it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from keel.cli import app
from keel.settings import Settings
from tests.support.services import services_required

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = ("staging", "prod")

_SETTING_NAME = re.compile(r"\bKEEL_[A-Z0-9_]+\b")


def setting_names() -> frozenset[str]:
    return frozenset(f"KEEL_{name.upper()}" for name in Settings.model_fields)


def unknown_settings(names: Iterable[str]) -> set[str]:
    """The ``KEEL_*`` names that are not settings."""
    return set(names) - setting_names()


def keel_names_in(text: str) -> set[str]:
    return set(_SETTING_NAME.findall(text))


def parse_keel_command(argv: Sequence[str]) -> dict[str, Any]:
    """Parse ``keel ARGV`` with Keel's real command tree; return the leaf command's parameters.

    Nothing runs: each level only parses. An unknown command or option raises the CLI's own
    usage error.
    """
    args = list(argv)
    command: Any = typer.main.get_command(app)
    context = command.make_context("keel", args)
    while hasattr(command, "resolve_command"):  # a group: descend to the named command
        # The command's own name and its arguments, as click's Group.invoke splits them.
        rest = [*context._protected_args, *context.args]
        name, command, remaining = command.resolve_command(context, rest)
        context = command.make_context(name, remaining, parent=context)
    return dict(context.params)


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(text) if document]


def need_tool(name: str, path: str | None) -> str:
    """The tool's path; a missing tool skips, and fails when KEEL_REQUIRE_SERVICES=1 (CI)."""
    if path is not None:
        return path
    message = f"{name} is not installed (see the Makefile and .ci/run)"
    if services_required():
        pytest.fail(message + " and KEEL_REQUIRE_SERVICES=1")
    pytest.skip(message)


def venv_tool(name: str) -> str | None:
    """A console script installed beside this interpreter (a dev dependency), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


@cache
def kubectl() -> str | None:
    """kubectl with a kustomize of v4 or later (``patches``, ``labels``): kubectl ≥ 1.21."""
    found = shutil.which("kubectl")
    if found is None:
        return None
    completed = subprocess.run(
        [found, "version", "--client"], capture_output=True, text=True, check=False, timeout=30
    )
    match = re.search(r"Kustomize Version: v(\d+)", completed.stdout)
    return found if match and int(match.group(1)) >= 4 else None


@cache
def render_overlay(overlay: str) -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize deploy/kubernetes/overlays/OVERLAY``, parsed."""
    binary = need_tool("kubectl (with kustomize v4+)", kubectl())
    completed = subprocess.run(
        [binary, "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    return tuple(load_yaml_documents(completed.stdout))
