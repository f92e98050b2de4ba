"""Metrics fed by the real event stream of a Session on ConcurrentExecutionBackend."""

from __future__ import annotations

import time

import pytest

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.errors import SessionError
from rhapsody_lab.backends import ConcurrentExecutionBackend
from rhapsody_lab.observe import Metrics, attach_metrics
from rhapsody_lab.observe.process import RemoteMetrics


def nap(seconds=0.02):
    time.sleep(seconds)


def boom():
    raise ValueError("bad input")


def noop():
    return None


async def _run(session, tasks):
    await session.submit_tasks(tasks)
    await session.wait_tasks(tasks)
    session.events.drain()


@pytest.mark.parametrize("process", [True, False], ids=["observer-process", "in-kernel"])
async def test_counts_latency_stream_and_utilisation_of_a_real_run(tmp_path, process):
    async with Session([ConcurrentExecutionBackend(max_workers=2)], work_dir=tmp_path) as s:
        m = attach_metrics(s, bin_width=0.1, process=process)
        assert isinstance(m, RemoteMetrics) == process
        assert attach_metrics(s) is m  # shared by every dashboard of the session
        tasks = [ComputeTask(function=nap) for _ in range(40)]
        tasks += [ComputeTask(function=boom) for _ in range(3)]
        await _run(s, tasks)
        m.sync()
        assert m.counts() == {"DONE": 40, "FAILED": 3}
        assert m.counts() == dict(s.get_statistics()["counts"])
        assert m.total_tasks == 43
        assert m.capacity == {"concurrent": 2}
        if not process:  # bounded memory: finished tasks are forgotten individually
            assert not m._last and not m._tr and not m._tq

        _, data = m.series()
        assert data["DONE"][-1] == 40 and data["FAILED"][-1] == 3
        assert max(data["QUEUED"]) > 0  # tasks waited for a slot at some point
        assert max(data["finished"]) > 0 and max(data["started"]) > 0
        # 2 slots busy with 20 ms naps: near-full utilisation while they ran
        assert max(data["utilisation"]) > 0.8
        assert all(0.0 <= u <= 1.05 for u in data["utilisation"])

        lat = m.latency()
        assert sum(lat["execution"]) == 43 and sum(lat["queue"]) == 43
        s50 = m.summary()
        assert 0.01 < s50["execution_p50"] < 0.2

        cursor, rects = m.rectangles(0)
        assert cursor == 43 and len(rects["uid"]) == 43
        assert set(rects["row"]) == {"concurrent/0", "concurrent/1"}
        assert rects["state"].count("FAILED") == 3
        assert all(e >= st for st, e in zip(rects["start"], rects["end"], strict=True))
        assert m.rectangles(cursor)[1]["uid"] == []  # a cursor sees only new bars
    if process:  # the observer process ends with the session's event stream
        m.observer.proc.wait(10)
        assert not m.observer.alive


async def test_per_backend_series_and_rollover_bounds(tmp_path):
    a = ConcurrentExecutionBackend(max_workers=2, name="a")
    b = ConcurrentExecutionBackend(max_workers=1, name="b")
    async with Session([a, b], work_dir=tmp_path) as s:
        m = attach_metrics(s, max_rectangles=25, bin_width=0.05, max_bins=8, process=False)
        tasks = [ComputeTask(function=noop, backend="a") for _ in range(60)]
        tasks += [ComputeTask(function=nap, args=(0.005,), backend="b") for _ in range(20)]
        await _run(s, tasks)
        m.sync()
        assert m.counts("a") == {"DONE": 60}
        assert m.counts("b") == {"DONE": 20}
        assert m.counts() == {"DONE": 80}
        assert sorted(m.backends) == ["a", "b"]
        assert m.capacity == {"a": 2, "b": 1}
        total, bars = m.rectangles(0)
        assert total >= 25 and len(set(bars["uid"])) == 25  # rollover: the newest bars only
        _, data = m.series("b")
        assert len(data["time"]) <= 8  # ring of max_bins
        assert data["DONE"][-1] == 20
        with pytest.raises(SessionError, match="nope"):
            m.series("nope")
    assert attach_metrics(s) is m  # metrics already attached stay readable after close
    closed = Session([ConcurrentExecutionBackend(max_workers=1)], work_dir=tmp_path)
    await closed.close()
    with pytest.raises(SessionError, match="journal"):
        attach_metrics(closed)  # nothing was observed: plot its journal instead


def test_replay_in_bins_is_exact_and_validates_options():
    m = Metrics(bin_width=1.0, live=False, capacity={"x": 1})
    t0 = 1_000_000.0
    ev = []
    for i in range(5):
        uid = f"t{i}"
        ev += [(t0 + i, uid, "SUBMITTED", "x", None), (t0 + i, uid, "QUEUED", "x", None),
               (t0 + i + 0.25, uid, "RUNNING", "x", 0), (t0 + i + 0.75, uid, "DONE", "x", 0)]
    m.ingest(ev)
    _, data = m.series()
    assert data["DONE"] == [1, 2, 3, 4, 5]
    # the newest bin only covers up to the last event (0.75 s of it)
    assert data["utilisation"] == pytest.approx([0.5] * 4 + [0.5 / 0.75])
    assert data["busy"] == pytest.approx([0.5] * 4 + [0.5 / 0.75])
    assert sum(m.latency()["queue"]) == 5
    with pytest.raises(SessionError, match="bin_width"):
        Metrics(bin_width=0)
    with pytest.raises(SessionError, match="max_rectangles"):
        Metrics(max_rectangles=0)
    with pytest.raises(SessionError, match="Session"):
        attach_metrics(object())


def test_task_stream_rollover_cursor_and_limit_across_folds():
    """Bars from many folds: the newest max_rectangles kept, in order, rows stable."""
    m = Metrics(max_rectangles=50, live=False)
    t = 1000.0
    for fold in range(7):  # 7 folds of 20 tasks: 140 bars recorded, 50 kept
        events = []
        for i in range(20):
            uid = f"f{fold}-{i:02d}"
            events += [(t, uid, "SUBMITTED", "b", None), (t + 0.1, uid, "RUNNING", "b", i % 3),
                       (t + 0.3, uid, "DONE" if i % 5 else "FAILED", "b", None)]
            t += 0.01
        m.ingest(events)
    total, bars = m.rectangles(0)
    assert total == 140 and len(bars["uid"]) == 50
    assert bars["uid"][0] == "f4-10" and bars["uid"][-1] == "f6-19"  # newest 50, in order
    assert set(bars["row"]) == {"b/0", "b/1", "b/2"}  # the RUNNING event's slot is kept
    rows = m.rows()
    assert all(rows[y] == r for y, r in zip(bars["y"], bars["row"], strict=True))
    assert all(abs(d - 0.2) < 1e-6 for d in bars["duration"])
    assert bars["state"].count("FAILED") == 10
    assert m.rectangles(total)[1]["uid"] == []  # nothing after the cursor
    _, newest = m.rectangles(130, limit=4)  # 10 newer than the cursor; the newest 4
    assert newest["uid"] == ["f6-16", "f6-17", "f6-18", "f6-19"]
    assert m._rects_held < 50 + 20  # at most one fold beyond the bound is held
