"""RHAPSODY's module path ``backends.execution.radical_pilot``."""

from ..radical_pilot import RadicalExecutionBackend

__all__ = ["RadicalExecutionBackend"]
