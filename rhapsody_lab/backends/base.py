"""RHAPSODY's module path ``backends.base``: the backend contract (``api.backend``)."""

from ..api.backend import BaseBackend

__all__ = ["BaseBackend"]
