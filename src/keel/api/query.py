"""Query parameter types shared by the list endpoints."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Query
from pydantic import AwareDatetime, BeforeValidator

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _rfc3339_only(value: object) -> object:
    """Pydantic would read ``0.5`` as a Unix time; the API promises RFC 3339 with an offset."""
    if isinstance(value, str) and not _RFC3339.match(value):
        raise ValueError("use an RFC 3339 date-time with an offset, e.g. 2026-01-31T09:00:00Z")
    return value


Timestamp = Annotated[
    AwareDatetime | None,
    BeforeValidator(_rfc3339_only),
    Query(description="RFC 3339 date-time with an offset"),
]
