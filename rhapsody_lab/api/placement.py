"""Where a service runs: ``"local"`` or ``"dragon"``, from what the caller asked for.

``"auto"`` means Dragon when this process runs under a Dragon runtime, local otherwise;
asking for Dragon (or pinning a ``host``) outside one is a ``BackendError`` saying how to
start the script under Dragon. Standard library only.
"""

from __future__ import annotations

import os

from .errors import BackendError

__all__ = ["resolve_placement", "under_dragon"]

_NOT_UNDER_DRAGON = ("placement='dragon' needs a Dragon runtime in this process; start the "
                     "script with `dragon -s script.py` (single node) or `dragon script.py` "
                     "inside an allocation, or use placement='local'")


def under_dragon() -> bool:
    """True when this process is a Dragon process (its runtime's variables are set)."""
    return bool(os.environ.get("DRAGON_MY_PUID") and os.environ.get("DRAGON_INF_PD"))


def resolve_placement(placement: str, name: str = "service", host: str | None = None) -> str:
    """``"dragon"`` or ``"local"``: what ``placement`` (and a pinned ``host``) mean here."""
    if placement == "local":
        return "local"
    if under_dragon():
        return "dragon"
    if placement == "dragon" or host is not None:
        what = "placement='dragon'" if placement == "dragon" else f"host={host!r}"
        raise BackendError(name, _NOT_UNDER_DRAGON.replace("placement='dragon'", what, 1))
    return "local"
