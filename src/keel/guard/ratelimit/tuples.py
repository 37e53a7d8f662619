"""Building named tuples on the per-request path.

``new_tuple(Cls, (a, b, ...))`` is ``tuple.__new__``: it builds a named tuple
from a plain one in C, skipping the generated Python ``__new__`` — a measurable
share of a decision on the memory backend. The limiter's modules share it.
"""

from __future__ import annotations

new_tuple = tuple.__new__

__all__ = ["new_tuple"]
