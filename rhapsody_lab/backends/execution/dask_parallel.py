"""RHAPSODY's module path ``backends.execution.dask_parallel``."""

from ..dask import DaskExecutionBackend

__all__ = ["DaskExecutionBackend"]
