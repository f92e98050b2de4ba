"""Plain ``dict`` tasks in ``submit_tasks`` (RHAPSODY accepts ``list[dict | BaseTask]``).

Each dict becomes the task ``BaseTask.from_dict`` builds from it (``function`` or
``executable``: a ``ComputeTask``; ``prompt``: an ``AITask``), which runs like any other.
The dict itself is kept up to date, as RHAPSODY's backends update it in place: it gets the
task's fields when submitted (``uid``, ``backend``, ``state``) and again when the task ends
(results, terminal state); the future returned for it resolves to the dict, after that
update, or raises what the task raised.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .errors import TaskValidationError
from .task import BaseTask

__all__ = ["adopt", "future_of", "relay"]


def adopt(tasks: list) -> tuple[list, list[tuple[int, dict, BaseTask]]]:
    """``tasks`` with every plain dict replaced by its task, and ``(index, dict, task)``."""
    out = list(tasks)
    adopted = []
    for i, item in enumerate(tasks):
        if item.__class__ is not dict:
            continue
        try:
            task = BaseTask.from_dict(item)
        except TypeError as exc:  # an argument the task classes do not take
            raise TaskValidationError(item.get("uid"), f"tasks[{i}] (a dict) is not a task "
                                      f"description: {exc}") from None
        out[i] = task
        adopted.append((i, item, task))
    return out, adopted


def relay(loop: asyncio.AbstractEventLoop, adopted: list, futures: list,
          registry: dict[str, tuple[dict, asyncio.Future]]) -> list:
    """Give each adopted dict its own future (resolving to the dict) in ``futures``."""
    for i, item, task in adopted:
        item.update(task)  # uid, backend, state as submitted
        mine = loop.create_future()
        futures[i].add_done_callback(_relay_to(item, task, mine))
        futures[i] = mine
        registry[task["uid"]] = (item, mine)
    return futures


def future_of(registry: dict[str, tuple[dict, asyncio.Future]], item: Any
              ) -> asyncio.Future | None:
    """The future of ``item`` if it is a plain dict given to ``submit_tasks``, else None."""
    if not isinstance(item, dict):
        return None
    entry = registry.get(item.get("uid"))  # type: ignore[arg-type]
    return entry[1] if entry is not None and entry[0] is item else None


def _relay_to(item: dict, task: BaseTask, mine: asyncio.Future) -> Any:
    def done(fut: asyncio.Future) -> None:
        item.update(task)  # results and the terminal state
        if mine.done():
            return
        if fut.cancelled():
            mine.cancel()
            return
        exc = fut.exception()
        if exc is None:
            mine.set_result(item)
        else:
            mine.set_exception(exc)
            mine.exception()  # failures are recorded on the dict; never logged as lost
    return done
