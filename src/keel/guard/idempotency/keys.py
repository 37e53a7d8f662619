"""What an idempotency key is, and what it is scoped to.

A key is 1–255 printable ASCII characters (``%x20-7E``). The IETF draft makes
``Idempotency-Key`` a Structured Field string (``"8e03978e-…"``); most
clients in the wild (Stripe's among them) send the bare value. Both are
accepted and mean the same key: a value that starts with ``"`` is parsed as an
``sf-string`` (RFC 8941 §3.3.3, escapes ``\\"`` and ``\\\\`` only), anything
else is taken as it is. More than one ``Idempotency-Key`` field is refused, as
the draft forbids clients to send it.

A key never stands alone: it is scoped to the user who sent it and to the
operation (method and route *template*), so the same string from another user
or organisation, or on another route, is a different key and can never replay
someone else's response.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from keel.guard.idempotency.errors import IdempotencyKeyInvalid

HEADER = b"idempotency-key"
MAX_LENGTH = 255


@dataclass(frozen=True, slots=True)
class KeyRef:
    """The full identity of a key: who, which operation, which key."""

    user_id: str
    org_id: str
    operation: str
    key: str


def _printable(value: str) -> bool:
    """``%x20-7E`` only: of ASCII, ``isprintable`` admits exactly these (a test holds it to
    that), in C rather than a loop over characters (every keyed request checks its key twice)."""
    return value.isascii() and value.isprintable()


def _sf_string(value: str) -> str:
    if len(value) < 2 or not value.endswith('"'):
        raise IdempotencyKeyInvalid("a quoted Idempotency-Key must end with '\"'")
    out: list[str] = []
    inner = value[1:-1]
    index = 0
    while index < len(inner):
        char = inner[index]
        if char == "\\":
            if index + 1 >= len(inner) or inner[index + 1] not in '"\\':
                raise IdempotencyKeyInvalid('only \\" and \\\\ may be escaped in an sf-string')
            out.append(inner[index + 1])
            index += 2
            continue
        if char == '"':
            raise IdempotencyKeyInvalid("an unescaped '\"' inside a quoted Idempotency-Key")
        out.append(char)
        index += 1
    return "".join(out)


def parse_key(value: bytes) -> str:
    """The key carried by one ``Idempotency-Key`` field value; raises if it is not one."""
    try:
        text = value.decode("ascii").strip(" \t")
    except UnicodeDecodeError:
        raise IdempotencyKeyInvalid("Idempotency-Key must be printable ASCII") from None
    if not _printable(text):
        raise IdempotencyKeyInvalid("Idempotency-Key must be printable ASCII")
    key = _sf_string(text) if text.startswith('"') else text
    if not 1 <= len(key) <= MAX_LENGTH:
        raise IdempotencyKeyInvalid(f"Idempotency-Key must be 1-{MAX_LENGTH} characters")
    return key


def key_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The request's key, ``None`` without one; raises on a malformed or repeated field."""
    values = [value for name, value in headers if name.lower() == HEADER]
    if not values:
        return None
    if len(values) > 1:
        raise IdempotencyKeyInvalid("send exactly one Idempotency-Key header field")
    return parse_key(values[0])


# What ``parse_key`` accepts, as a regular expression (ECMA-262 and Python alike) for
# the OpenAPI document: a bare key (1-255 printable ASCII characters, not starting with
# a space or '"'; trailing spaces are optional whitespace and dropped), or an sf-string
# holding 1-255 characters where '"' and '\' are escaped. A test holds the two together.
_BARE = rf"[!#-~][ -~]{{0,{MAX_LENGTH - 1}}}"
_SF_STRING = rf'"(?:[ !#-\[\]-~]|\\["\\]){{1,{MAX_LENGTH}}}" *'
KEY_PATTERN = rf"^(?:{_BARE}|{_SF_STRING})$"

# The header as OpenAPI documents it on the operations that take it; ``create_app``
# marks it ``required`` on the operations KEEL_IDEMPOTENCY_REQUIRED_ROUTES names.
OPENAPI_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "A unique value (a UUID) identifying this operation; repeat it on every retry. "
        "1-255 printable ASCII characters, bare or as a Structured Field string "
        '(`"..."`, with `\\"` and `\\\\` escaped). Required on the operations '
        "KEEL_IDEMPOTENCY_REQUIRED_ROUTES names (by default POST /v1/recognitions and "
        "POST /v1/exports). See the README's idempotency policy."
    ),
    "schema": {"type": "string", "pattern": KEY_PATTERN},
}
