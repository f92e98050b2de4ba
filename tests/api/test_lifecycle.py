"""The task life cycle: one owner of ``task.state``, forward-only, terminal final; and the
one drain that applies a backend's outcome records through it."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from rhapsody_lab.api import STATES, ComputeTask
from rhapsody_lab.api.backend import DONE_RUN, BaseBackend
from rhapsody_lab.api.lifecycle import may_move


class _Recorder(BaseBackend):
    """A backend with no runtime: the test appends outcome records by hand."""

    async def _start(self) -> None:
        pass

    def capacity(self) -> int:
        return 1

    async def submit_tasks(self, tasks) -> None:
        self._accept(tasks)

    async def cancel_task(self, uid: str) -> bool:
        return False


def _backend(events: list) -> _Recorder:
    b = _Recorder("rec")
    b.attach(events.append)
    b._wake_pending = True  # no loop callback: the test drains by hand
    return b


def test_moves_go_forward_skip_and_never_leave_a_terminal_state():
    order = ["NEW", "SUBMITTED", "QUEUED", "RUNNING"]
    for a, b in itertools.product(STATES, STATES):
        expected = a in order and (b not in order or order.index(b) > order.index(a))
        assert may_move(a, b) is expected, (a, b)


def test_move_refuses_backwards_and_repeats_and_emits_only_real_moves():
    events: list = []
    b = _backend(events)
    t = ComputeTask(function=print)
    assert b.move(t, "QUEUED", 1.0) and t.state == "QUEUED"
    assert not b.move(t, "SUBMITTED", 2.0) and t.state == "QUEUED"  # backwards
    assert b.move(t, "RUNNING", 3.0)
    assert not b.move(t, "RUNNING", 4.0)  # a start reported twice
    b._finish(t, "DONE", 5.0)
    assert not b.move(t, "RUNNING", 6.0) and t.state == "DONE"  # terminal is final
    b._finish(t, "FAILED", 7.0)
    assert t.state == "DONE"
    assert [(e[2], e[0]) for e in events] == [("QUEUED", 1.0), ("RUNNING", 3.0),
                                              ("DONE", 5.0)]


@pytest.mark.parametrize("seed", range(20))
def test_move_all_means_move_task_by_task(seed):
    """The bulk move equals the plain loop of ``move`` on random mixes of states."""
    rnd = random.Random(seed)
    for state in ("SUBMITTED", "QUEUED", "RUNNING"):
        tasks = [ComputeTask(function=print) for _ in range(rnd.randint(0, 40))]
        for t in tasks:
            t["state"] = rnd.choice(STATES)
        twins = [ComputeTask(function=print, uid=t.uid + "x") for t in tasks]
        for t, w in zip(tasks, twins, strict=True):
            w["state"] = t["state"]
        times = [float(i) for i in range(len(tasks))]
        bulk_events: list = []
        _backend(bulk_events).move_all(tasks, state, times, 7)
        plain_events: list = []
        plain = _backend(plain_events)
        for w, t0 in zip(twins, times, strict=True):
            plain.move(w, state, t0, 7)
        assert [t.state for t in tasks] == [w.state for w in twins]
        assert [(e[0], e[1], e[2], e[4]) for e in bulk_events] == \
            [(e[0], e[1][:-1], e[2], e[4]) for e in plain_events]


def test_drain_applies_records_in_order_whatever_their_string_identity():
    """RUNNING, DONE (also one unpickled from a worker: equal, not identical), FAILED and a
    run of DONE tasks; the bulk step and the one-by-one step give the same result."""
    loop = asyncio.new_event_loop()
    try:
        events: list = []
        b = _backend(events)
        tasks = [ComputeTask(function=print) for _ in range(12)]
        for t in tasks:
            t.bind_future(loop.create_future())
        b._live.update((t.uid, t) for t in tasks)
        done_copy = "".join(["DO", "NE"])  # equal to DONE, another object
        for i, t in enumerate(tasks[:8]):
            b._done.append((t, "RUNNING", float(i), 0))
            b._done.append((t, done_copy if i == 3 else "DONE", float(i) + 0.5, 0))
        b._done.append((tasks[8], "FAILED", 9.0, 0))
        b._done.append((tasks[9:], DONE_RUN, ([10.0, 11.0, 12.0], [10.5, 11.5, 12.5]), 1))
        b.drain_step = 16  # the first step is starts and ends only: the bulk path
        b._drain()
    finally:
        loop.close()
    assert [t.state for t in tasks] == ["DONE"] * 8 + ["FAILED"] + ["DONE"] * 3
    assert not b._live and not b._done
    by_task = {t.uid: [e[2] for e in events if e[1] == t.uid] for t in tasks}
    assert by_task[tasks[3].uid] == ["RUNNING", "DONE"]
    assert by_task[tasks[8].uid] == ["FAILED"]
    assert by_task[tasks[10].uid] == ["RUNNING", "DONE"]


def test_a_start_seen_twice_in_one_step_is_one_event():
    """Backends that see a start twice (Dask: a look at the workers, then the result)
    still emit one RUNNING per task."""
    loop = asyncio.new_event_loop()
    try:
        events: list = []
        b = _backend(events)
        b.starts_may_repeat = True
        tasks = [ComputeTask(function=print) for _ in range(6)]
        for t in tasks:
            t.bind_future(loop.create_future())
        b._live.update((t.uid, t) for t in tasks)
        for t in tasks:
            b._done.append((t, "RUNNING", 1.0, 0))
        for t in tasks:
            b._done.append((t, "RUNNING", 1.1, 0))
            b._done.append((t, "DONE", 2.0, 0))
        b._drain()
    finally:
        loop.close()
    assert [e[2] for e in events].count("RUNNING") == 6
    assert [t.state for t in tasks] == ["DONE"] * 6
