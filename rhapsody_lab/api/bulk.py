"""Named fast paths: the few engine operations over many tasks that C-level passes speed up.

Each helper means exactly the plain loop in its docstring (``tests/api/test_bulk.py``
checks each against it) and states its gain: loop time / helper time, 2,000 and 200 tasks,
best of 51, measured by ``bench/bench_bulk.py`` on the project's 2-core machine (CPython
3.11). Helpers that gained < 5% there went back to plain loops at their call sites:
``deque(map(setitem, ...), maxlen=0)`` measured 0.80x, a ``map`` of ``dict.pop`` 0.70x,
``list(map(itemgetter("uid"), ...))`` 1.03x. Below ``FEW`` tasks no bulk path pays.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from itertools import repeat
from operator import itemgetter

__all__ = ["FEW", "all_in", "futures", "resolve", "take"]

#: Fewer tasks than this are handled one by one (an agentic loop: one task in flight).
FEW = 8

_STATE = itemgetter("state")
_POPLEFT = deque.popleft
_SET_RESULT = asyncio.Future.set_result
_FUTURE_DONE = asyncio.Future.done


def all_in(tasks: Sequence[dict], states: frozenset[str]) -> bool:
    """``all(t["state"] in states for t in tasks)`` (1.41x at 2,000 tasks, 1.45x at 200)."""
    return set(map(_STATE, tasks)) <= states


def take(done: deque, most: int) -> list:
    """Up to ``most`` items from the left of ``done``, another thread appending on the
    right meanwhile: ``[done.popleft() for _ in range(min(len(done), most))]``
    (1.57x at 2,000, 1.20x at 200)."""
    return list(map(_POPLEFT, repeat(done, min(len(done), most))))


def futures(tasks: Sequence) -> list[asyncio.Future] | None:
    """The tasks' futures if every one is a pending ``asyncio.Future``, else None:
    ``fs = [t._future for t in tasks]`` then ``fs if all(type(f) is asyncio.Future and not
    f.done() for f in fs) else None`` (1.16x at 2,000, 1.15x at 200)."""
    futs = list(map(getattr, tasks, repeat("_future"), repeat(None)))
    if set(map(type, futs)) != {asyncio.Future} or any(map(_FUTURE_DONE, futs)):
        return None
    return futs


def resolve(futs: list[asyncio.Future], tasks: Sequence) -> None:
    """``for f, t in zip(futs, tasks): f.set_result(t)`` (1.30x at 2,000, 1.23x at 200)."""
    deque(map(_SET_RESULT, futs, tasks), maxlen=0)
