"""``NoopExecutionBackend`` at RHAPSODY's import path (``rhapsody.backends.execution.noop``)."""

from ..noop import NoopExecutionBackend

__all__ = ["NoopExecutionBackend"]
