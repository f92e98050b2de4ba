"""Code that runs at interpreter exit *before* ``concurrent.futures`` joins its executors'
threads: ``atexit`` runs after that join, too late to release a thread it waits for.

``threading``'s exit hooks (the mechanism ``concurrent.futures`` itself uses) run newest
first, so a hook registered once that module is loaded runs before its join.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401  (its hook first, so ours run before it)
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["before_thread_joins"]

_registered: set[Callable[[], Any]] = set()


def before_thread_joins(hook: Callable[[], Any]) -> None:
    """Call ``hook()`` once at exit, before executor threads are joined (registering the
    same hook again does nothing; without ``threading``'s hooks, an ``atexit`` one)."""
    if hook in _registered:
        return
    _registered.add(hook)
    register = getattr(threading, "_register_atexit", None)
    try:
        (register or atexit.register)(hook)
    except RuntimeError:  # the interpreter is already shutting down
        pass
