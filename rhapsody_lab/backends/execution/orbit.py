"""RHAPSODY's module path ``backends.execution.orbit``."""

from ..orbit import OrbitExecutionBackend

__all__ = ["OrbitExecutionBackend"]
