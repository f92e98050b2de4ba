"""DragonDataBackend: a Dragon DDict owned by the backend, under the ``dragon`` runtime.

Building a ``dragon.data.ddict.DDict`` starts its orchestrator and managers and blocks until
they are up, so ``start()`` runs it in a thread; ``shutdown()`` destroys it. Dragon is
imported at ``start()``, and only inside a Dragon runtime (``dragon -s script.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import os
from typing import Any

from ...api.errors import SessionError
from .base import DataBackend, DataBackendError, DataBackendStartupError, Endpoint

__all__ = ["DragonDataBackend", "DragonEndpoint", "DragonNotInstalledError"]

_PROBE_KEY = "__rhapsody_lab_data_backend_probe__"
_NOT_UNDER_DRAGON = (
    "no Dragon runtime in this process: a DDict lives in one; start the script with "
    "`dragon -s script.py` (single node) or `dragon script.py` inside an allocation")


class DragonNotInstalledError(DataBackendError, ImportError):
    """dragonhpc is missing (an ``ImportError``, as RHAPSODY raises at construction)."""


@dataclasses.dataclass(frozen=True)
class DragonEndpoint(Endpoint):
    """A DDict's serialized descriptor: ``DDict.attach(endpoint.serialize())``."""

    descriptor: str

    def serialize(self) -> str:
        return self.descriptor


class DragonDataBackend(DataBackend):
    """One Dragon DDict, created with ``wait_for_keys=True``.

    Keyword arguments go to ``DDict(...)`` unchanged (``managers_per_node``, ``n_nodes``,
    ``total_mem``, ...); ``working_set_size`` defaults to 2, the least ``wait_for_keys``
    allows. ``_wait_for_keys`` exists for RHAPSODY parity and must stay True.
    """

    def __init__(self, *, name: str = "dragon", _wait_for_keys: bool = True,
                 **ddict_kwargs: Any) -> None:
        super().__init__(name=name)
        if importlib.util.find_spec("dragon") is None:  # found, not imported (it is heavy)
            raise DragonNotInstalledError("DragonDataBackend needs dragonhpc, which is not "
                                          "installed; pip install 'rhapsody-lab[dragon]'")
        if _wait_for_keys is not True:
            raise SessionError("DragonDataBackend: _wait_for_keys must be True (clients such "
                               "as radex refuse a DDict made with wait_for_keys=False), got "
                               f"{_wait_for_keys!r}; drop the argument")
        if "wait_for_keys" in ddict_kwargs:
            raise SessionError("DragonDataBackend: wait_for_keys is always True and may not "
                               f"be passed, got wait_for_keys={ddict_kwargs['wait_for_keys']!r}"
                               "; drop the argument")
        wss = ddict_kwargs.setdefault("working_set_size", 2)
        if isinstance(wss, bool) or not isinstance(wss, int) or wss < 2:
            raise SessionError(f"DragonDataBackend: working_set_size must be an int >= 2 "
                               f"(wait_for_keys needs 2), got {wss!r}")
        for key in ("managers_per_node", "n_nodes", "total_mem"):
            v = ddict_kwargs.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise SessionError(f"DragonDataBackend: {key} must be an int >= 1, got {v!r}")
        self._ddict_kwargs: dict[str, Any] = {**ddict_kwargs, "wait_for_keys": True}
        self._ddict: Any = None

    @property
    def ddict(self) -> Any:
        """The DDict itself (None until started): ``backend.ddict["key"] = value``."""
        return self._ddict

    async def _do_start(self, wait: bool) -> list[Endpoint]:
        if not os.environ.get("DRAGON_MY_PUID") or not os.environ.get("DRAGON_INF_PD"):
            raise DataBackendStartupError(f"DragonDataBackend '{self.name}': "
                                          f"{_NOT_UNDER_DRAGON}")
        try:
            from dragon.data.ddict import DDict
        except ImportError as exc:
            raise DataBackendStartupError(
                f"DragonDataBackend '{self.name}': dragonhpc is not installed ({exc}); "
                "install it with `pip install 'rhapsody-lab[dragon]'`") from None
        try:
            self._ddict = await asyncio.to_thread(DDict, **self._ddict_kwargs)
        except Exception as exc:
            self._ddict = None
            raise DataBackendStartupError(f"DragonDataBackend '{self.name}': the DDict did "
                                          f"not start: {type(exc).__name__}: {exc}") from exc
        return [DragonEndpoint(self._ddict.serialize())]

    async def _do_shutdown(self) -> None:
        ddict, self._ddict = self._ddict, None
        if ddict is not None:
            await asyncio.to_thread(ddict.destroy)

    async def _do_ready(self) -> bool:
        ddict = self._ddict
        if ddict is None:
            return False

        def probe() -> bool:
            try:
                _PROBE_KEY in ddict  # noqa: B015 - a round trip to a manager
                return True
            except Exception:
                return False
        return await asyncio.to_thread(probe)
