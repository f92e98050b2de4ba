"""The "resources" plot everywhere the other plots are: the static report (from a journal
the telemetry wrote readings to), the notebook dashboard (while telemetry runs), the
dashboard server's apps (what the lab panel lists)."""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("bokeh", reason="the dashboard extra is not installed")
pytest.importorskip("opentelemetry.sdk", reason="the telemetry extra is not installed")
pytest.importorskip("psutil", reason="the telemetry extra is not installed")

from rhapsody_lab import dashboard
from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.backends import ConcurrentExecutionBackend
from rhapsody_lab.dashboard.notebook import DEFAULT_PLOTS
from rhapsody_lab.dashboard.report import write_report
from rhapsody_lab.dashboard.resources import WAITING_TITLE, Resources
from rhapsody_lab.observe import attach_journal


def square(x):
    return x * x


async def _readings(tm, n=2, timeout=10.0):
    deadline = time.monotonic() + timeout
    while len(tm.resource_rows()[1]) < n:
        assert time.monotonic() < deadline, "no resource readings"
        await asyncio.sleep(0.05)


async def test_notebook_dashboard_adds_resources_once_telemetry_runs(tmp_path):
    async with Session([ConcurrentExecutionBackend(max_workers=2)], work_dir=tmp_path) as s:
        plain = dashboard.show(s, interval=3600)
        assert tuple(plain.components) == DEFAULT_PLOTS  # no telemetry: no resources plot
        plain.stop()
        early = Resources(s)  # made before telemetry starts: waits, then picks it up
        early.update()
        assert early.waiting and early.root.title.text == WAITING_TITLE
        tm = await s.start_telemetry(resource_poll_interval=0.1)
        await _readings(tm)
        w = dashboard.show(s, interval=3600)
        try:
            assert "resources" in w.components
            w.update()
            plot = w.components["resources"]
            series = set(plot.source.data["series"])
            assert {sr.split()[-1] for sr in series} >= {"cpu", "memory"}
            assert all(0.0 <= v <= 100.0 for v in plot.source.data["value"])
            assert not any("gpu" in sr for sr in series) or plot.lines  # GPU rows only real
            early.update()
            assert not early.waiting and early.root.title.text.startswith("Resources (%")
            bundle = w._repr_mimebundle_()
            assert "text/plain" in bundle
        finally:
            w.stop()


async def test_static_report_contains_the_resources_plot(tmp_path):
    async with Session([ConcurrentExecutionBackend(max_workers=2)], work_dir=tmp_path,
                       uid="res-report") as s:
        journal = attach_journal(s)
        tm = await s.start_telemetry(resource_poll_interval=0.1)
        tasks = [ComputeTask(function=square, args=(i,)) for i in range(20)]
        await s.submit_tasks(tasks)
        await s.wait_tasks(tasks)
        await _readings(tm, 3)
    journal.close()
    out = write_report(journal.path, tmp_path / "report.html")
    page = Path(out).read_text(encoding="utf-8")
    assert '"name":"resources"' in page.replace(" ", "")
    assert "Resources (% per node)" in page and " cpu" in page and " memory" in page
    # a journal without readings: no empty resources plot
    async with Session([ConcurrentExecutionBackend(max_workers=1)], work_dir=tmp_path,
                       uid="no-res") as s:
        j2 = attach_journal(s)
        one = [ComputeTask(function=square, args=(1,))]
        await s.submit_tasks(one)
        await s.wait_tasks(one)
    j2.close()
    page = Path(write_report(j2.path, tmp_path / "plain.html")).read_text(encoding="utf-8")
    assert "Resources (% per node)" not in page and WAITING_TITLE not in page


async def test_dashboard_server_serves_the_resources_app(tmp_path):
    async with Session([ConcurrentExecutionBackend(max_workers=1)], work_dir=tmp_path) as s:
        tm = await s.start_telemetry(resource_poll_interval=0.1)
        server = dashboard.serve(s, plots=["resources"], interval=0.1)
        try:
            assert set(server.urls) == {"resources"}
            loop = asyncio.get_running_loop()
            page = await loop.run_in_executor(
                None, lambda: urllib.request.urlopen(server.urls["resources"], timeout=20)
                .read().decode())
            assert "bokeh" in page.lower()
            await _readings(tm)
            (comp,) = server.components("resources")
            deadline = time.monotonic() + 10
            while not comp.lines:  # the server's periodic callback streams the readings
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        finally:
            server.stop()


async def test_the_resources_app_waits_for_telemetry_without_a_bokeh_warning(tmp_path,
                                                                              caplog):
    async with Session([ConcurrentExecutionBackend(max_workers=1)], work_dir=tmp_path) as s:
        server = dashboard.serve(s, plots=["resources"], interval=0.1)
        try:
            loop = asyncio.get_running_loop()
            with caplog.at_level(logging.WARNING, logger="bokeh"):
                page = await loop.run_in_executor(
                    None, lambda: urllib.request.urlopen(server.urls["resources"],
                                                         timeout=20).read().decode())
            assert "bokeh" in page.lower()
            # a plot without lines yet is expected, not a warning in the notebook's output
            assert not [r for r in caplog.records if "W-1000" in r.getMessage()], \
                caplog.text
            (comp,) = server.components("resources")
            assert comp.waiting and comp.note.visible
            assert comp.root.title.text == WAITING_TITLE
            tm = await s.start_telemetry(resource_poll_interval=0.1)
            await _readings(tm)
            deadline = time.monotonic() + 10
            # the open app picks the telemetry up (on the server's thread: wait for its
            # last step, not the first)
            while comp.note.visible:
                assert time.monotonic() < deadline, "the app never drew the readings"
                await asyncio.sleep(0.1)
            assert not comp.waiting and comp.root.title.text.startswith("Resources (%")
        finally:
            server.stop()
