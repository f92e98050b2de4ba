"""RHAPSODY's module path ``backends.base``: ``BaseBackend`` is RHAPSODY's contract
(``api.contract``; its seven abstract methods), which every backend here implements."""

from ..api.contract import BackendContract as BaseBackend

__all__ = ["BaseBackend"]
