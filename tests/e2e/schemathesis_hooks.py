"""Schemathesis hooks for ``test_openapi_conformance`` (loaded through ``SCHEMATHESIS_HOOKS``).

Every *valid* ``Idempotency-Key`` schemathesis draws is replaced with a fresh one.
Hypothesis draws the same small keys again and again ("0", "!"), and a key repeated
with the same body is, by Keel's documented contract, a replay of the first answer —
including a ``201`` for a file deleted since — which schemathesis' stateful checks
would read as "a created resource is missing". Replays have their own tests
(tests/integration/idempotency); invalid keys are left as drawn, so the server's
refusal of them stays under test.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import schemathesis

from keel.guard.idempotency.keys import KEY_PATTERN

_PATTERN = re.compile(KEY_PATTERN)
_SEQUENCE = itertools.count(1)


@schemathesis.hook
def map_headers(_context: Any, headers: dict[str, Any] | None) -> dict[str, Any] | None:
    key = headers.get("Idempotency-Key") if headers else None
    if headers and isinstance(key, str) and _PATTERN.fullmatch(key):
        headers["Idempotency-Key"] = f"schemathesis-{next(_SEQUENCE)}"
    return headers
