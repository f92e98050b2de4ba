"""``ConcurrentExecutionBackend`` at ``rhapsody.backends.execution.concurrent``'s path."""

from ..concurrent import ConcurrentExecutionBackend

__all__ = ["ConcurrentExecutionBackend"]
