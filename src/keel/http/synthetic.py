"""Which requests are a synthetic check's: the header, and who may send it.

A request carrying ``Keel-Synthetic: 1`` is a synthetic check's, but only when
its token is an organisation admin's: anyone could send the header, and a
client that marked its failing requests synthetic would hide them from the
SLOs. Marked requests are timed into their own counter, never the request
histogram, and never counted by the SLO rollups.
"""

from __future__ import annotations

from starlette.types import Scope

from keel.http.state import peek
from keel.synthetic.checks import SYNTHETIC_HEADER

_HEADER = SYNTHETIC_HEADER.lower().encode("latin-1")


def is_synthetic(scope: Scope) -> bool:
    """Whether this request is a synthetic check's (the header, from an admin token)."""
    state = peek(scope)
    principal = state.principal if state is not None else None
    if principal is None or not principal.is_admin:
        return False
    return any(name == _HEADER and value.strip() == b"1" for name, value in scope["headers"])
