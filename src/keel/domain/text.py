"""What text Keel stores: no NUL, no unpaired surrogate, control characters per field.

A NUL cannot be stored by PostgreSQL; an unpaired surrogate cannot be encoded
as UTF-8 by either database (or by the JSON encoder on the way out); control
characters in a name or a filename end up in logs, headers and terminals. The
rule is decided here, once, for both kinds of text:

- free text (a message) may keep tab, line feed and carriage return; every
  other C0 control, DEL and the C1 controls are refused;
- a single-line value (ids, a category, names, filters, cursors, filenames)
  refuses every control character.

Both refuse NUL and any surrogate code point (a Python ``str`` can only hold a
surrogate unpaired: a pair decodes to one code point). The API applies the rule
through the pydantic types of :mod:`keel.api.text`; services that take text
from elsewhere (the CLI) call :func:`check_line`.
"""

from __future__ import annotations

import re

from keel.errors import InvalidInput

# C0 except tab, LF and CR; DEL; C1; the surrogate block.
_FREE_TEXT_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# Every C0 control, DEL, C1 and the surrogate block.
_LINE_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _describe(char: str) -> str:
    code = ord(char)
    if code == 0:
        return "a NUL character"
    if 0xD800 <= code <= 0xDFFF:
        return f"an unpaired surrogate (U+{code:04X})"
    return f"a control character (U+{code:04X})"


def refusal(value: str, *, multiline: bool) -> str | None:
    """Why ``value`` is not acceptable text, or ``None`` if it is (never echoes the text)."""
    found = (_FREE_TEXT_REFUSED if multiline else _LINE_REFUSED).search(value)
    if found is None:
        return None
    return f"the text contains {_describe(found.group())} at position {found.start()}"


def check_line(value: str, field: str) -> str:
    """``value`` if it is acceptable single-line text, else :class:`InvalidInput` on ``field``."""
    reason = refusal(value, multiline=False)
    if reason is not None:
        raise InvalidInput(f"{field}: {reason}", field=field)
    return value


def printable(value: str, replacement: str = "_") -> str:
    """``value`` with every character a single line refuses replaced (for output built
    from text stored before these checks existed)."""
    return _LINE_REFUSED.sub(replacement, value)
