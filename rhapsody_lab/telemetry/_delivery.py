"""Calling telemetry subscribers: plain functions on the telemetry thread, ``async def``
ones as tasks on the session's loop; a subscriber's failure is logged, never raised."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

__all__ = ["call_subscribers"]

log = logging.getLogger(__name__)
_SPAWNED: set[asyncio.Future] = set()  # async subscribers' tasks, held until they end


def call_subscribers(subs: list, pairs: list, loop: asyncio.AbstractEventLoop | None
                     ) -> None:
    """Give each ``(event, span)`` of ``pairs`` to every subscriber in ``subs``."""
    later = []
    for event, _span in pairs:
        for sub in subs:
            if asyncio.iscoroutinefunction(sub):
                later.append((sub, event))
                continue
            try:
                sub(event)
            except Exception:
                log.debug("telemetry subscriber %r failed", sub, exc_info=True)
    if later and loop is not None and not loop.is_closed():
        try:
            loop.call_soon_threadsafe(_spawn, later)
        except RuntimeError:  # the loop closed meanwhile
            pass


def _spawn(later: list[tuple[Any, Any]]) -> None:
    for sub, event in later:
        try:
            task = asyncio.ensure_future(sub(event))
        except Exception:
            log.debug("telemetry subscriber %r failed", sub, exc_info=True)
            continue
        _SPAWNED.add(task)
        task.add_done_callback(_ended)


def _ended(task: asyncio.Future) -> None:
    _SPAWNED.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.debug("async telemetry subscriber failed", exc_info=task.exception())
