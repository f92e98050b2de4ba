"""rhapsody_lab: a Jupyter-first workbench for heterogeneous AI-HPC workloads.

``from rhapsody_lab import Session, ComputeTask``; backends live in
``rhapsody_lab.backends`` and are imported only when used, so this import stays light
(``get_backend``, ``discover_backends``, ``BackendRegistry``, ``enable_logging`` and the
IPython extension hooks load on first use).

This top package also composes the layers: the engine (``rhapsody_lab.api``) reaches the
policy, the dashboard and Dragon placement of services only through providers that those
layers register (``rhapsody_lab.api.extensions``); the loaders below import them on
first use, so the imports come from here, above the engine.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import Any

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
from .api import extensions as _extensions

try:
    __version__ = _version("rhapsody-lab")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0.dev0"

__all__ = [
    "AITask",
    "BackendError",
    "BackendRegistry",
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
    "enable_logging",
    "get_backend",
    "load_ipython_extension",
    "unload_ipython_extension",
]

#: provider name -> the module that registers it when imported (api.extensions)
_PROVIDERS = {
    "policy": "rhapsody_lab.policy",
    "dashboard": "rhapsody_lab.dashboard",
    "services.dragon": "rhapsody_lab.backends._dragon_launch",
    "telemetry": "rhapsody_lab.telemetry",
}
#: lazy public name -> the module that defines it
_LAZY = {
    "BackendRegistry": "rhapsody_lab.backends.registry",
    "discover_backends": "rhapsody_lab.backends.registry",
    "enable_logging": "rhapsody_lab.logger",
    "get_backend": "rhapsody_lab.backends.registry",
    "load_ipython_extension": "rhapsody_lab.notebook",
    "unload_ipython_extension": "rhapsody_lab.notebook",
}


def _loader(module: str) -> Any:
    def load() -> None:
        import_module(module)
    return load


for _name, _module in _PROVIDERS.items():
    _extensions.register_loader(_name, _loader(_module))
del _name, _module


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rhapsody_lab' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
