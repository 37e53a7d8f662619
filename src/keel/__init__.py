"""Keel: a recognitions API built around a reusable reliability layer."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("keel")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
