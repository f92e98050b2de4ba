"""``DaskExecutionBackend`` at RHAPSODY's path (``rhapsody.backends.execution.dask_parallel``)."""

from ..dask import DaskExecutionBackend

__all__ = ["DaskExecutionBackend"]
