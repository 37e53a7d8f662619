"""What Keel shows the outside world, as plain data: the OpenAPI document, the CLI and the settings.

These three must not change while the code behind them is reshaped. The
snapshot test (``tests/unit/test_surface_snapshots.py``) compares each to a
file committed under ``tests/snapshots/``; this module computes them and
writes those files when a change is intended:

    KEEL_REGENERATE_SNAPSHOTS=1 python -m pytest tests/unit/test_surface_snapshots.py
    # or: PYTHONPATH=$PWD/src python -m tests.support.surface

Each is computed from defaults only (no ``KEEL_*`` variables, no ``.env``), so
the snapshot does not depend on the machine it was written on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer.main

SNAPSHOTS = Path(__file__).resolve().parents[1] / "snapshots"
REGENERATE = "KEEL_REGENERATE_SNAPSHOTS"


@contextmanager
def _clean_environment() -> Iterator[None]:
    saved = {name: value for name, value in os.environ.items() if name.startswith("KEEL_")}
    for name in saved:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(saved)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of ``create_app`` under default settings."""
    from keel.app import create_app  # noqa: PLC0415 - imported late: builds the whole app
    from keel.settings import Settings  # noqa: PLC0415

    with _clean_environment():
        return create_app(Settings(_env_file=None)).openapi()  # type: ignore[call-arg]


def _type_name(param: Any) -> str:
    """The parameter's declared type (Typer keeps the annotation, Click a ParamType)."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        return str(descriptor.annotation)
    return str(param.type.name)


# Typer ships its own copy of Click (``typer._click``), so parameters and
# commands are read by attribute here, never by isinstance against ``click``.
def _parameter(param: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": param.name,
        "kind": param.param_type_name,
        "opts": list(param.opts),
        "secondary_opts": list(param.secondary_opts),
        "required": param.required,
        "multiple": param.multiple,
        "nargs": param.nargs,
        "type": _type_name(param),
        "envvar": param.envvar,
    }
    choices = getattr(getattr(param, "type", None), "choices", None)
    if choices is not None:
        entry["choices"] = [str(choice) for choice in choices]
    if hasattr(param, "is_flag"):
        entry["is_flag"] = param.is_flag
        entry["count"] = param.count
    default = param.default
    entry["default"] = None if callable(default) else repr(default)
    return entry


def _command(command: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": command.name,
        "hidden": command.hidden,
        "params": [_parameter(param) for param in command.params],
    }
    if hasattr(command, "commands"):
        entry["commands"] = {name: _command(sub) for name, sub in sorted(command.commands.items())}
    return entry


def cli_tree() -> dict[str, Any]:
    """Every ``keel`` command and sub-command with its arguments and options."""
    from keel.cli import app  # noqa: PLC0415

    with _clean_environment():
        return _command(typer.main.get_command(app))


def settings_fields() -> dict[str, Any]:
    """Each setting: the environment variable that sets it, its type and its default."""
    from keel.settings import Settings  # noqa: PLC0415

    prefix = Settings.model_config.get("env_prefix", "")
    fields: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias
        fields[name] = {
            "env": str(alias).upper() if alias else f"{prefix}{name}".upper(),
            "type": str(field.annotation),
            "default": repr(field.get_default(call_default_factory=True)),
        }
    return fields


SURFACES = {
    "openapi.json": openapi_document,
    "cli.json": cli_tree,
    "settings.json": settings_fields,
}


def render(value: Any) -> str:
    """Deterministic JSON: sorted keys, two-space indent, a final newline."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def regenerate() -> list[Path]:
    written = []
    SNAPSHOTS.mkdir(exist_ok=True)
    for filename, compute in SURFACES.items():
        path = SNAPSHOTS / filename
        path.write_text(render(compute()), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in regenerate():
        print(f"wrote {path}")
