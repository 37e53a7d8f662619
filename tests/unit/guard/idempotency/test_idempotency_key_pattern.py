"""The ``Idempotency-Key`` pattern in the OpenAPI document is exactly what the server accepts.

``KEY_PATTERN`` is what clients and schemathesis read; ``parse_key`` is what the
server enforces. For any header value (as HTTP delivers it: leading and trailing
optional whitespace removed), the pattern matches if and only if the server takes
the key.
"""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from keel.guard.idempotency.errors import IdempotencyKeyInvalid
from keel.guard.idempotency.keys import KEY_PATTERN, MAX_LENGTH, parse_key

PATTERN = re.compile(KEY_PATTERN)
# Printable ASCII, the two characters an sf-string escapes, and a few that are refused.
ALPHABET = st.sampled_from([chr(c) for c in range(0x20, 0x7F)] + ["\t", "\x00", "\x7f", "é"])


def _accepted(value: str) -> bool:
    try:
        parse_key(value.encode("utf-8"))
    except IdempotencyKeyInvalid:
        return False
    return True


@given(st.text(ALPHABET, max_size=300) | st.builds(lambda s: f'"{s}"', st.text(ALPHABET)))
@example("8e03978e-40d5-43e8-bc93-6894a57f9324")
@example('"8e03978e"')
@example('"a \\"quoted\\" \\\\ key"')
@example('""')
@example('"unterminated')
@example('"bad \\x escape"')
@example("k" * MAX_LENGTH)
@example("k" * (MAX_LENGTH + 1))
@example('"' + "k" * MAX_LENGTH + '"')
@example('"' + "k" * (MAX_LENGTH + 1) + '"')
def test_the_documented_pattern_matches_exactly_the_keys_the_server_accepts(value: str) -> None:
    delivered = value.strip(" \t")  # HTTP strips optional whitespace around a field value
    assert bool(PATTERN.fullmatch(delivered)) == _accepted(delivered), repr(delivered)
