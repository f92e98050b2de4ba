"""Extension points: what the engine offers through upper layers without importing them.

The engine imports only the standard library, yet ``Session.from_policy`` builds backends,
``Session.dashboard`` opens Bokeh plots and a service can be placed through Dragon. Each
of these is a *provider*, looked up here by name; the layer that implements it registers
it when imported (``register_provider``), and ``rhapsody_lab/__init__.py`` registers a
*loader* for each (``register_loader``): a function of the upper layer that imports it.
So the import is triggered by the session but always made from above, never by the engine.

- ``"policy"``: ``(policy, allocation) -> (backends, router)``, by ``rhapsody_lab.policy``;
- ``"dashboard"``: ``(session, plots, interval) -> widget``, by ``rhapsody_lab.dashboard``;
- ``"services.dragon"``: the Dragon launcher of ``api.services`` (see ``Service``), by
  ``rhapsody_lab.backends._dragon_launch``;
- ``"telemetry"``: ``async (session, **options) -> TelemetryManager``, by
  ``rhapsody_lab.telemetry`` (``Session.start_telemetry``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import SessionError

__all__ = ["provider", "register_loader", "register_provider"]

_providers: dict[str, Any] = {}
_loaders: dict[str, Callable[[], object]] = {}


def register_provider(name: str, implementation: Any) -> None:
    """Make ``implementation`` the provider called ``name`` (a later one replaces it)."""
    _providers[name] = implementation


def register_loader(name: str, load: Callable[[], object]) -> None:
    """Call ``load()`` (which registers ``name``) the first time ``name`` is asked for."""
    _loaders[name] = load


def provider(name: str) -> Any:
    """The provider called ``name``, running its loader first if none is registered yet.

    An ``ImportError`` of the loader (an extra not installed) propagates to the caller,
    which knows which extra to name.
    """
    found = _providers.get(name)
    if found is None:
        load = _loaders.get(name)
        if load is not None:
            load()
            found = _providers.get(name)
    if found is None:
        raise SessionError(f"nothing provides {name!r} in this process (registered: "
                           f"{sorted(_providers)}); import rhapsody_lab, whose __init__ "
                           "registers the loaders of the standard providers")
    return found
