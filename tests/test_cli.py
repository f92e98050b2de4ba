"""The command line: the demo end to end, and the report verb."""

from __future__ import annotations

import io
import os

import pytest

from rhapsody_lab.cli import main


def test_demo_runs_every_backend_and_writes_a_report(tmp_path, monkeypatch):
    pytest.importorskip("bokeh", reason="the report needs the dashboard extra")
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--tasks", "20", "--report", "demo.html"]) == 0
    html = (tmp_path / "demo.html").read_text()
    assert "rhapsody_lab report" in html and "Bokeh" in html


def test_demo_output_names_the_handled_failures(tmp_path):
    import asyncio

    from rhapsody_lab.demo import demo
    out = io.StringIO()
    stats = asyncio.run(demo(10, out=out, report=None, work_dir=str(tmp_path)))
    text = out.getvalue()
    assert stats["counts"]["FAILED"] == 2
    assert "simulated solver error" in text and "fails on purpose" in text
    assert "Total tasks" in text


def test_report_of_a_missing_journal_fails_with_a_message(tmp_path, capsys):
    pytest.importorskip("bokeh", reason="the report needs the dashboard extra")
    assert main(["report", str(tmp_path / "nope.jsonl"), "-o",
                 os.fspath(tmp_path / "r.html")]) == 1
    assert "does not exist" in capsys.readouterr().err


async def test_session_dashboard_returns_a_live_widget():
    pytest.importorskip("jupyter_bokeh", reason="the dashboard extra is not installed")
    from rhapsody_lab.api import ComputeTask, Session
    from rhapsody_lab.backends import ConcurrentExecutionBackend
    async with Session([ConcurrentExecutionBackend()]) as session:
        widget = session.dashboard()
        tasks = [ComputeTask(function=abs, args=(-i,)) for i in range(10)]
        await session.submit_tasks(tasks)
        await session.wait_tasks(tasks)
        assert widget is not None and type(widget).__name__ == "DashboardWidget"
