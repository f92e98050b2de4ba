"""The session panel through its widget state and .click(); progress views; rich reprs."""

from __future__ import annotations

import asyncio
import io
import time

from rh_nb_helpers import run

from rhapsody_lab.api import AITask, ComputeTask, Session
from rhapsody_lab.backends.concurrent import ConcurrentExecutionBackend
from rhapsody_lab.notebook import get_controller, reprs
from rhapsody_lab.notebook.widgets import TerminalBar, panel_for

SLOW = "import time\ndef slow(x):\n    time.sleep(0.2)\n    return x\n"


def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_panel_updates_live_from_its_own_timer(ip):
    run(ip, "%rhapsody start --workers 2")
    run(ip, SLOW)
    ctl = get_controller(ip)
    panel = panel_for(ctl, ip.user_ns["session"])
    assert panel_for(ctl, ip.user_ns["session"]) is panel  # one live panel per session
    assert "concurrent" in panel.backends.value and "<td>2</td>" in panel.backends.value
    run(ip, "%rhapsody map slow range(6)")
    # nobody calls refresh(): the panel's timer on the session loop redraws it
    _until(lambda: "RUNNING</span>&nbsp;2" in panel.counts.value)
    _until(lambda: panel.bar.value == 6 and panel.bar.max == 6)
    assert panel.bar.bar_style == "success"
    assert "DONE</span>&nbsp;6" in panel.counts.value
    assert panel.bar_label.value.startswith("6/6")


def test_cancel_button_cancels_queued_tasks(ip):
    run(ip, "%rhapsody start --workers 1")
    run(ip, SLOW)
    run(ip, "%rhapsody map slow range(8)")
    ctl = get_controller(ip)
    panel = panel_for(ctl, ip.user_ns["session"])
    time.sleep(0.05)
    panel.cancel_button.click()
    _until(lambda: panel.message.value.startswith("canceled"))
    assert panel.message.value == "canceled 7 of 8 unfinished tasks"
    run(ip, "%rhapsody wait")
    states = [t.state for t in ip.user_ns["tasks"]]
    assert states.count("CANCELED") == 7 and states.count("DONE") == 1
    _until(lambda: "CANCELED</span>&nbsp;7" in panel.counts.value)


def test_stop_button_closes_the_session_and_disables_buttons(ip):
    run(ip, "%rhapsody start")
    run(ip, SLOW)
    run(ip, "%rhapsody map slow range(3)")
    session = ip.user_ns["session"]
    panel = panel_for(get_controller(ip), session)
    panel.stop_button.click()
    _until(lambda: panel.message.value == "session stopped")
    assert session.closed
    assert panel.stop_button.disabled and panel.cancel_button.disabled
    assert "stopped" in panel.title.value
    assert panel._timer is None  # the timer ends with the session


def test_panel_mimebundle_has_widget_html_and_text(ip):
    run(ip, "%rhapsody start")
    session = ip.user_ns["session"]
    bundle = panel_for(get_controller(ip), session).mimebundle()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert f"Session {session.uid}" in bundle["text/html"]
    assert bundle["text/plain"].startswith("<Session")


def test_terminal_progress_bar():
    out = io.StringIO()
    bar = TerminalBar(0, 4, stream=out)
    bar.update(4, 4)
    bar.close(None)
    assert "[" + "#" * 30 + "] 4/4" in out.getvalue()
    assert out.getvalue().endswith("\n")


async def _run_tasks():
    async with Session([ConcurrentExecutionBackend()]) as s:
        ok = ComputeTask(function=divmod, args=(7, 2), source="divmod(7, 2)")
        bad = ComputeTask(function=divmod, args=(1, 0))
        exe = ComputeTask(executable="/bin/echo", arguments=["<b>hi</b>"])
        tasks = [ok, bad, exe]
        await s.submit_tasks(tasks)
        await s.wait_tasks(tasks)
        return tasks, s.get_statistics(), s


def test_reprs_html_and_text():
    tasks, stats, session = asyncio.run(_run_tasks())
    ok, bad, exe = tasks
    assert reprs.task_text(ok).endswith("divmod() -> (3, 1)")
    assert "DONE" in reprs.task_html(ok) and "divmod(7, 2)" in reprs.task_html(ok)
    assert "ZeroDivisionError" in reprs.task_text(bad) and "FAILED" in reprs.task_html(bad)
    assert "&lt;b&gt;hi&lt;/b&gt;" in reprs.task_html(exe)  # escaped, never raw HTML
    listing = reprs.tasks_html(tasks)
    assert "3 tasks" in listing and listing.count("<tr>") == 4
    assert reprs.tasks_text(tasks).startswith("3 tasks (2 DONE, 1 FAILED)")
    assert reprs.is_statistics(stats) and not reprs.is_statistics({"counts": 1})
    assert "3 tasks" in reprs.statistics_html(stats) and "p95" in reprs.statistics_html(stats)
    assert reprs.statistics_text(stats).startswith("tasks 3 (DONE 2, FAILED 1)")
    assert "(closed)" in reprs.session_html(session)
    ai = AITask(model="m", prompt="hello")
    assert "prompt hello" in reprs.task_text(ai)
    assert reprs.task_mimebundle(ai).keys() == {"text/html", "text/plain"}


def test_ipython_formatters_registered(ip):
    tasks, stats, session = asyncio.run(_run_tasks())
    fmt = ip.display_formatter
    data, _ = fmt.format(tasks[0])
    assert "<table>" in data["text/html"] and data["text/plain"].startswith("ComputeTask")
    data, _ = fmt.format(tasks)
    assert "3 tasks" in data["text/html"]
    data, _ = fmt.format(stats)
    assert "throughput" in data["text/html"]
    data, _ = fmt.format(session)
    assert "text/html" in data and data["text/plain"].startswith("<Session")
    backend = session.backends["concurrent"]
    data, _ = fmt.format(backend)
    assert "ConcurrentExecutionBackend" in data["text/html"] and "slots" in data["text/html"]
    assert data["text/plain"].startswith("<ConcurrentExecutionBackend concurrent SHUTDOWN")
    data, _ = fmt.format([1, 2])  # other lists and dicts are left alone
    assert "text/html" not in data
    data, _ = fmt.format({"a": 1})
    assert "text/html" not in data
