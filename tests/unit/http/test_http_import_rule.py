"""The parts beside the request path know nothing of HTTP.

``guard/``, ``observe/``, ``jobs/``, ``audit/``, ``resilience/`` and ``domain/``
hold decisions, stores and measurements; the request pipeline (``keel.http``)
adapts them to ASGI. This test walks their sources and fails on any import —
top level, inside a function or under ``TYPE_CHECKING`` — of FastAPI,
Starlette, ``keel.http`` or ``keel.api``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import keel

PACKAGES = ("guard", "observe", "jobs", "audit", "resilience", "domain")
FORBIDDEN = ("fastapi", "starlette", "keel.http", "keel.api")
ROOT = Path(keel.__file__).parent


def imported_modules(source: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def is_forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def test_the_rule_sees_every_kind_of_import() -> None:
    source = (
        "import starlette.types\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from keel.http.state import RequestState\n"
        "def f():\n    from fastapi import Request\n"
        "from keel.api.services import Services\n"
        "from keel.httpx_like import x\n"
    )
    assert {m for _, m in imported_modules(source) if is_forbidden(m)} == {
        "starlette.types",
        "keel.http.state",
        "fastapi",
        "keel.api.services",
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_nothing_from_the_web_layer(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources under keel/{package}"
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in files
        for line, module in imported_modules(path.read_text(encoding="utf-8"))
        if is_forbidden(module)
    ]
    assert offences == []
