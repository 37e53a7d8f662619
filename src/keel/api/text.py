"""Text that Keel accepts: the one check every string from a client passes.

A NUL byte cannot be stored by PostgreSQL, an unpaired surrogate cannot be
encoded as UTF-8 by either database (or by the JSON encoder on the way
out), and control characters in a name or a filename end up in logs,
headers and terminals. So text is checked where it enters — body fields,
query and path parameters, multipart filenames — and refused with the same
422 on every database, before any of it reaches storage.

Two kinds of text, decided per field:

- :data:`Text`, free text such as a message, may keep tab, line feed and
  carriage return; every other C0 control, DEL and the C1 controls are refused;
- :data:`Line`, a single-line value (ids, a category, filters, cursors,
  filenames), refuses every control character.

Both refuse NUL and any surrogate code point (a Python ``str`` can only hold
a surrogate unpaired: a pair decodes to one code point).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

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
    """Why ``value`` is not acceptable text, or ``None`` if it is."""
    found = (_FREE_TEXT_REFUSED if multiline else _LINE_REFUSED).search(value)
    if found is None:
        return None
    return f"the text contains {_describe(found.group())} at position {found.start()}"


def free_text(value: str) -> str:
    """Pydantic validator for :data:`Text`."""
    reason = refusal(value, multiline=True)
    if reason is not None:
        raise PydanticCustomError("text_invalid", reason)
    return value


def single_line(value: str) -> str:
    """Pydantic validator for :data:`Line`."""
    reason = refusal(value, multiline=False)
    if reason is not None:
        raise PydanticCustomError("text_invalid", reason)
    return value


def printable(value: str, replacement: str = "_") -> str:
    """``value`` with every character :data:`Line` refuses replaced (for output built
    from text stored before these checks existed)."""
    return _LINE_REFUSED.sub(replacement, value)


Text = Annotated[str, AfterValidator(free_text)]
"""Free text: tab, LF and CR allowed; NUL, other controls and surrogates refused."""

Line = Annotated[str, AfterValidator(single_line)]
"""A single-line value: NUL, every control character and surrogates refused."""
