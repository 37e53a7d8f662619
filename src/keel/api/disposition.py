"""``Content-Disposition: attachment`` for a stored filename (RFC 6266, RFC 8187).

The filename came from a client, so it is never copied into the header as it
is: a header value with a control character makes the server fail *after* the
status was chosen — the connection drops with no answer. The value
built here is always a valid header:

- ``filename="…"`` is an ASCII fallback for old user agents: every character
  outside printable ASCII, and ``"``, ``\\`` and ``%`` (which some agents
  unescape), becomes ``_``;
- ``filename*=UTF-8''…`` (RFC 8187) carries the real name, percent-encoded,
  whenever the fallback is not exactly it. It comes after ``filename`` because
  agents that do not know ``filename*`` then still read the fallback.

Control characters and unpaired surrogates — refused at upload, but possible
in rows stored before that — become ``_`` in both forms.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from keel.api.text import printable

# RFC 8187 attr-char beyond ALPHA and DIGIT; everything else is percent-encoded.
_ATTR_CHAR_PUNCTUATION = "!#$&+-.^_`|~"
_NOT_FALLBACK_SAFE = re.compile(r'[^\x20-\x7e]|["\\%]')


def attachment(filename: str, *, default: str = "download") -> str:
    """The ``Content-Disposition`` value offering ``filename`` for download."""
    name = printable(filename) or default
    fallback = _NOT_FALLBACK_SAFE.sub("_", name)
    value = f'attachment; filename="{fallback}"'
    if fallback != name:
        encoded = quote(name.encode("utf-8"), safe=_ATTR_CHAR_PUNCTUATION)
        value += f"; filename*=UTF-8''{encoded}"
    return value
