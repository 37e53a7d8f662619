"""The README's metric tables: the contract ``/metrics`` and the dashboard are held to."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
_ROW = re.compile(r"^\| `(?P<name>[a-z_]+)` \| (?P<type>[a-z]+)")


def documented_metrics(header: str = "| metric | type | labels |") -> dict[str, str]:
    """``{name: type}`` from every README table whose header line starts with ``header``."""
    found: dict[str, str] = {}
    in_table = False
    for line in README.read_text().splitlines():
        if line.startswith(header):
            in_table = True
            continue
        if in_table and not line.startswith("|"):
            in_table = False
        match = _ROW.match(line) if in_table else None
        if match:
            found[match["name"]] = match["type"]
    return found
