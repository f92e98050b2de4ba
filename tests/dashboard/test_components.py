"""Dashboard components and the notebook widget, driven by a real Session."""

from __future__ import annotations

import asyncio
import time

import pytest

from rhapsody_lab import dashboard
from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.errors import SessionError
from rhapsody_lab.backends import ConcurrentExecutionBackend
from rhapsody_lab.dashboard.components import (
    Latency,
    TaskStates,
    TaskStream,
    Throughput,
    Utilisation,
)
from rhapsody_lab.observe import attach_metrics


def nap(seconds=0.01):
    time.sleep(seconds)


async def _run(session, tasks):
    await session.submit_tasks(tasks)
    await session.wait_tasks(tasks)
    session.events.drain()


async def test_components_stream_and_patch_never_rebuild(tmp_path):
    async with Session([ConcurrentExecutionBackend(max_workers=2)], work_dir=tmp_path) as s:
        m = attach_metrics(s, bin_width=0.05)
        states, tput, util = TaskStates(m), Throughput(m), Utilisation(m)
        stream, lat = TaskStream(m, rollover=30), Latency(m)
        sources = [c.source for c in (states, tput, util, stream, lat)]
        await _run(s, [ComputeTask(function=nap) for _ in range(60)])
        m.sync()
        for c in (states, tput, util, stream, lat):
            c.update()
        assert [c.source for c in (states, tput, util, stream, lat)] == sources
        assert states.source.data["DONE"][-1] == 60
        assert max(states.source.data["QUEUED"]) > 0
        assert max(tput.source.data["finished"]) > 0
        assert max(util.source.data["utilisation"]) > 0.7
        assert len(stream.source.data["uid"]) == 30  # rollover keeps the newest bars
        assert set(stream.source.data["row"]) <= {"concurrent/0", "concurrent/1"}
        assert stream.root.yaxis.major_label_overrides == {0: "concurrent/0",
                                                           1: "concurrent/1"} or \
            stream.root.yaxis.major_label_overrides == {0: "concurrent/1", 1: "concurrent/0"}
        assert sum(lat.source.data["execution"]) == 60

        # a second batch: rows are appended (and the open row patched), not duplicated
        rows = len(states.source.data["time"])
        await asyncio.sleep(0.12)
        await _run(s, [ComputeTask(function=nap) for _ in range(10)])
        m.sync()
        states.update()
        states.update()
        times = states.source.data["time"]
        assert len(times) > rows
        assert times == sorted(set(times))  # one row per bin, in order
        assert states.source.data["DONE"][-1] == 70


async def test_utilisation_adds_a_line_per_backend(tmp_path):
    a = ConcurrentExecutionBackend(max_workers=1, name="a")
    b = ConcurrentExecutionBackend(max_workers=1, name="b")
    async with Session([a, b], work_dir=tmp_path) as s:
        m = attach_metrics(s, bin_width=0.05)
        util = Utilisation(m)
        renderers = len(util.root.renderers)
        await _run(s, [ComputeTask(function=nap, backend=n) for n in "ab" for _ in range(10)])
        m.sync()
        util.update()
        assert set(util.sources) == {"all", "a", "b"}
        assert len(util.root.renderers) == renderers + 2
        assert max(util.sources["a"].data["utilisation"]) > 0.5


async def test_notebook_widget_refreshes_on_its_timer(tmp_path):
    async with Session([ConcurrentExecutionBackend(max_workers=2)], work_dir=tmp_path) as s:
        w = dashboard.show(s, interval=0.05)
        from jupyter_bokeh import BokehModel
        assert isinstance(w.model, BokehModel)
        bundle = w._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
        assert "text/plain" in bundle and "text/html" in bundle
        await _run(s, [ComputeTask(function=nap) for _ in range(40)])
        deadline = time.time() + 10
        src = w.components["task-states"].source
        bars = w.components["task-stream"].source
        while time.time() < deadline and (not src.data["DONE"] or src.data["DONE"][-1] < 40
                                          or len(bars.data["uid"]) < 40):
            await asyncio.sleep(0.05)
        assert w.updates > 0
        assert src.data["DONE"][-1] == 40
        assert len(w.components["task-stream"].source.data["uid"]) == 40
        w.stop()
        await asyncio.sleep(0.2)  # a refresh already running may finish
        n = w.updates
        await asyncio.sleep(0.2)
        assert w.updates == n
        with pytest.raises(SessionError, match="unknown plot"):
            dashboard.show(s, plots=["pie"])


async def test_a_refresh_is_one_round_trip_to_the_observer(tmp_path):
    async with Session([ConcurrentExecutionBackend(max_workers=2)], work_dir=tmp_path) as s:
        w = dashboard.show(s, plots=["task-states", "throughput", "utilisation",
                                     "task-stream", "latency"], interval=3600)
        await _run(s, [ComputeTask(function=nap) for _ in range(20)])
        m = w.metrics.sync()
        calls = []
        read = m.observer.read

        def counted(kind, *args):
            calls.append(kind)
            return read(kind, *args)

        m.observer.read = counted
        w.update()
        assert calls == ["bundle"]
        assert w.components["task-states"].source.data["DONE"][-1] == 20
        assert sum(w.components["latency"].source.data["execution"]) == 20
        w.stop()
