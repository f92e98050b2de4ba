"""RHAPSODY's module path ``backends.execution.dragon``."""

from ..dragon import DragonExecutionBackend, DragonExecutionBackendV3

__all__ = ["DragonExecutionBackend", "DragonExecutionBackendV3"]
