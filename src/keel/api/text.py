"""Text that the API accepts: the types every string from a client passes.

Text is checked where it enters — body fields, query and path parameters,
multipart filenames — and refused with the same 422 on every database, before
any of it reaches storage. The rule itself lives in
:mod:`keel.domain.text`; here it becomes two pydantic types, so a new field
declared with one of them is checked without anything else to remember:

- :data:`Text`, free text such as a message: tab, LF and CR allowed;
- :data:`Line`, a single-line value (ids, a category, filters, cursors).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from keel.domain.text import printable, refusal

__all__ = ["Line", "Text", "free_text", "printable", "refusal", "single_line"]


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


Text = Annotated[str, AfterValidator(free_text)]
"""Free text: tab, LF and CR allowed; NUL, other controls and surrogates refused."""

Line = Annotated[str, AfterValidator(single_line)]
"""A single-line value: NUL, every control character and surrogates refused."""
