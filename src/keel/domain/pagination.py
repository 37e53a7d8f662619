"""Opaque keyset cursors.

Lists are ordered newest first by id (UUIDv7, so by creation time). A cursor
holds the last id a page returned; the next page asks for ids below it. A row
inserted while a client pages is either above the first page (new, not
shown) or lands between existing ids and is picked up once — never a
duplicate, never a skipped row that existed when paging began.
"""

from __future__ import annotations

import base64
import binascii
import json

from keel.errors import BadRequest
from keel.ids import is_valid_id

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def encode_cursor(last_id: str) -> str:
    raw = json.dumps({"after": last_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        last_id = data["after"]
    except (binascii.Error, ValueError, KeyError, TypeError) as error:
        raise BadRequest("the cursor is not one this API issued", field="cursor") from error
    if not isinstance(last_id, str) or not is_valid_id(last_id):
        raise BadRequest("the cursor is not one this API issued", field="cursor")
    return last_id
