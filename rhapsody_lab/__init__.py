"""rhapsody_lab: a Jupyter-first workbench for heterogeneous AI-HPC workloads.

``from rhapsody_lab import Session, ComputeTask``; backends live in
``rhapsody_lab.backends`` and are imported only when used, so this import stays light.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .api import (
    AITask,
    BackendError,
    BaseTask,
    ComputeTask,
    ResourceError,
    RhapsodyError,
    Session,
    SessionError,
    TaskExecutionError,
    TaskValidationError,
)
from .backends.registry import discover_backends, get_backend
from .notebook import load_ipython_extension, unload_ipython_extension

try:
    __version__ = _version("rhapsody-lab")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0.dev0"

__all__ = [
    "AITask",
    "BackendError",
    "BaseTask",
    "ComputeTask",
    "ResourceError",
    "RhapsodyError",
    "Session",
    "SessionError",
    "TaskExecutionError",
    "TaskValidationError",
    "__version__",
    "discover_backends",
    "get_backend",
    "load_ipython_extension",
    "unload_ipython_extension",
]
