"""Each named fast path of ``rhapsody_lab.api.bulk`` equals the plain loop it names."""

from __future__ import annotations

import asyncio
import random
from collections import deque

import pytest

from rhapsody_lab.api import STATES, ComputeTask, bulk


@pytest.mark.parametrize("seed", range(10))
def test_all_in_is_the_plain_all(seed):
    rnd = random.Random(seed)
    tasks = [ComputeTask(function=print) for _ in range(rnd.randint(0, 20))]
    for t in tasks:
        t["state"] = rnd.choice(STATES[:4])
    for allowed in (frozenset(STATES[:2]), frozenset(STATES[:3]), frozenset(STATES)):
        assert bulk.all_in(tasks, allowed) is all(t["state"] in allowed for t in tasks)


@pytest.mark.parametrize("most", [0, 1, 5, 50])
def test_take_is_popleft_in_a_loop(most):
    items = list(range(20))
    fast, plain = deque(items), deque(items)
    assert bulk.take(fast, most) == [plain.popleft() for _ in range(min(len(plain), most))]
    assert fast == plain


def test_futures_and_resolve_are_their_loops():
    loop = asyncio.new_event_loop()
    try:
        tasks = [ComputeTask(function=print) for _ in range(10)]
        for t in tasks:
            t.bind_future(loop.create_future())
        futs = bulk.futures(tasks)
        assert futs == [t._future for t in tasks]
        bulk.resolve(futs, tasks)
        assert all(f.result() is t for f, t in zip(futs, tasks, strict=True))
        assert bulk.futures(tasks) is None  # done futures: not the plain case
        unbound = ComputeTask(function=print)
        other = [ComputeTask(function=print) for _ in range(3)]
        for t in other:
            t.bind_future(loop.create_future())
        assert bulk.futures([*other, unbound]) is None
        assert bulk.futures(other) is not None
    finally:
        loop.close()
