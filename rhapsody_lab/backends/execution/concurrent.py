"""RHAPSODY's module path ``backends.execution.concurrent``."""

from ..concurrent import ConcurrentExecutionBackend

__all__ = ["ConcurrentExecutionBackend"]
