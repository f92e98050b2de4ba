"""``BaseBackend`` at RHAPSODY's import path (``rhapsody.backends.base``); see ``api.backend``."""

from ..api.backend import BaseBackend

__all__ = ["BaseBackend"]
