"""JupyterLab in a real browser: a notebook starts a session with the magic, the sidebar
lists it with live counts, a button opens a dashboard plot panel that renders and updates
and comes back after a page reload; the "resources" panel of a session whose telemetry
polls the node draws its CPU and memory lines.

Drives Debian's Chromium (``/usr/bin/chromium``) with Playwright against a real
``jupyter lab`` started here on a free port with a token; screenshots go to
``test-artifacts/``. Skipped, with the reason, when Chromium or Playwright is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# the network is closed here: without these Chromium stalls on start-up
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"Chromium not found at {CHROMIUM} (.ci/setup.d/30-chromium.sh "
                              "installs it)"),
]

CELLS = [
    "%load_ext rhapsody_lab\n%rhapsody start --name ui-demo --workers 2",
    "import time\nfrom rhapsody_lab import ComputeTask\n\n"
    "def nap(i):\n    time.sleep(0.25)\n    return i\n\n"
    "futures = await session.submit_tasks([ComputeTask(function=nap, args=(i,))\n"
    "                                      for i in range(200)])",
]

# the last value of the DONE series in the plot's Bokeh document (None until it loaded)
DONE_IN_PLOT = """() => {
  const doc = window.Bokeh && window.Bokeh.documents && window.Bokeh.documents[0];
  if (!doc) { return null; }
  for (const m of doc.all_models) {
    const data = m.data;
    if (!data) { continue; }
    const done = data instanceof Map ? data.get('DONE') : data['DONE'];
    if (done && done.length) { return done[done.length - 1]; }
  }
  return null;
}"""


RESOURCE_CELLS = [
    "%load_ext rhapsody_lab\n%rhapsody start --name res-demo --workers 2",
    "telemetry = await session.start_telemetry(resource_poll_interval=0.2)\n"
    "from rhapsody_lab import ComputeTask\n\n"
    "def spin(n):\n    return sum(i * i for i in range(n))\n\n"
    "futures = await session.submit_tasks([ComputeTask(function=spin, args=(300_000,))\n"
    "                                      for _ in range(40)])",
]

# the resources plot as the browser holds it: its title and each line renderer's values,
# by series name (None until the document loaded)
RESOURCES_IN_PLOT = """() => {
  const doc = window.Bokeh && window.Bokeh.documents && window.Bokeh.documents[0];
  if (!doc) { return null; }
  const out = {title: null, series: {}};
  for (const m of doc.all_models) {
    if (m.name === 'resources' && m.title) { out.title = m.title.text; }
    if (m.glyph === undefined || !m.name || !m.data_source) { continue; }
    const data = m.data_source.data;
    const values = data instanceof Map ? data.get('value') : data['value'];
    out.series[m.name] = Array.from(values || [], Number);
  }
  return out;
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(path: Path, sources: list[str]) -> None:
    cells = [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {},
              "outputs": [], "source": src} for i, src in enumerate(sources)]
    path.write_text(json.dumps({
        "cells": cells, "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                    "language": "python"}}}))


@pytest.fixture
def lab(tmp_path):
    """A real ``jupyter lab`` (this venv, the installed extension) on a free port."""
    pytest.importorskip("playwright", reason="playwright is not installed (test extra)")
    root = tmp_path / "root"
    root.mkdir()
    _notebook(root / "ui.ipynb", CELLS)
    _notebook(root / "resources.ipynb", RESOURCE_CELLS)
    news = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)  # no "get notified about Jupyter news?" toast in screenshots
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    tracker = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)  # a notebook's own kernel starts without a "Select Kernel"
    (tracker / "tracker.jupyterlab-settings").write_text('{"autoStartDefaultKernel": true}')
    port, token = _free_port(), "rhapsody-ui-test-token"
    env = dict(os.environ,
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               RHAPSODY_LAB_REGISTRY_DIR=str(tmp_path / "registry"))
    env.pop("RHAPSODY_LAB_BASE_URL", None)
    log = open(tmp_path / "lab.log", "w")  # noqa: SIM115 (closed below)
    jupyter = shutil.which("jupyter", path=os.path.dirname(sys.executable))
    proc = subprocess.Popen(
        [jupyter, "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
         f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
         "--ServerApp.base_url=/lab-test/", "--allow-root"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/lab-test/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}api/status?token={token}", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("jupyter lab did not start:\n"
                                         + (tmp_path / "lab.log").read_text()) from None
                time.sleep(0.3)
        yield {"base": base, "token": token, "registry": tmp_path / "registry",
               "log": tmp_path / "lab.log", "workspaces": tmp_path / "workspaces"}
    finally:
        try:  # shuts its kernels down too
            req = urllib.request.Request(f"{base}api/shutdown", method="POST",
                                         headers={"Authorization": f"token {token}"})
            urllib.request.urlopen(req, timeout=10).close()
            proc.wait(20)
        except Exception:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log.close()


def _run_cell(page, cells, i: int) -> None:
    """Run code cell ``i`` (Shift+Enter, retried: a key press while Lab settles is lost)
    and wait until it finished without writing to stderr."""
    from playwright.sync_api import expect
    prompt = cells.nth(i).locator(".jp-InputPrompt")
    for _attempt in range(5):
        cells.nth(i).locator(".jp-InputArea-editor").click()
        page.keyboard.press("Shift+Enter")
        try:
            expect(prompt).not_to_have_text("[ ]:", timeout=3_000)
            break
        except AssertionError:
            continue
    expect(prompt).to_have_text(re.compile(r"\[\d+\]"))
    expect(cells.nth(i).locator(".jp-OutputArea-output[data-mime-type="
                                "'application/vnd.jupyter.stderr']")).to_have_count(0)


@contextlib.contextmanager
def _lab_page(lab, notebook: str, failure_png: str) -> Iterator[Any]:
    """Headless Chromium on ``notebook`` in the lab, its kernel idle and the extension's
    sidebar tab opened; a failure leaves ``failure_png`` in test-artifacts/."""
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            page.set_default_timeout(30_000)
            page.goto(f"{lab['base']}lab/tree/{notebook}?token={lab['token']}")
            tab = page.locator('li.lm-TabBar-tab[data-id="rhapsody-lab-sessions"]')
            expect(tab).to_be_visible()
            expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
                   ).to_be_visible()
            tab.click()
            yield page
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / failure_png))
            raise
        finally:
            browser.close()


def test_sidebar_lists_the_session_and_opens_a_live_plot(lab):
    from playwright.sync_api import expect

    with _lab_page(lab, "ui.ipynb", "lab-failure.png") as page:
        sidebar = page.locator("#rhapsody-lab-sessions")
        expect(sidebar).to_contain_text("No live sessions")

        # run the notebook: %load_ext, %rhapsody start, 200 tasks
        cells = page.locator(".jp-Notebook .jp-CodeCell")
        for i in range(len(CELLS)):
            _run_cell(page, cells, i)

        card = sidebar.locator(".rh-lab-session[data-uid='ui-demo']")
        expect(card).to_be_visible()
        expect(card).to_contain_text("concurrent (2 slots)")
        expect(card.locator(".rh-lab-count[data-state='DONE']")).to_be_visible()
        first = int(card.locator(".rh-lab-count[data-state='DONE']").inner_text()
                    .split()[-1])
        expect(card.locator(".rh-lab-count[data-state='DONE']")).not_to_have_text(
            f"DONE {first}")  # the counts refresh live
        page.screenshot(path=str(ARTIFACTS / "lab-sidebar.png"))

        # open the task-states plot in a main-area panel
        card.locator("button.rh-lab-plot-button[data-plot='task-states']").click()
        panel = page.locator(".rh-lab-plot[data-plot='task-states']")
        expect(panel).to_be_visible()
        frame = page.frame_locator(".rh-lab-plot[data-plot='task-states'] iframe")
        expect(frame.locator("canvas").first).to_be_visible()
        plot = next(f for f in page.frames if "/rhapsody-lab/dashboard/" in f.url)
        assert "/lab-test/rhapsody-lab/dashboard/" in plot.url
        deadline = time.monotonic() + 20
        seen = []
        while time.monotonic() < deadline:
            done = plot.evaluate(DONE_IN_PLOT)
            if done is not None and (not seen or done != seen[-1]):
                seen.append(done)
            if len(seen) >= 3:
                break
            time.sleep(0.3)
        assert len(seen) >= 3 and seen == sorted(seen), seen  # the plot updates live
        page.screenshot(path=str(ARTIFACTS / "lab-dashboard-panel.png"))

        # the count chips follow the engine's state order, sent by the server
        from rhapsody_lab.api.states import STATES
        shown = card.locator(".rh-lab-count").evaluate_all(
            "chips => chips.map(c => c.dataset.state)")
        assert shown == [s for s in STATES if s in shown], shown

        # after a page reload the plot panel comes back (the layout restorer)
        workspaces = Path(lab["workspaces"])
        deadline = time.monotonic() + 20
        while not any("rhapsody-lab-plots" in f.read_text()
                      for f in workspaces.glob("*.jupyterlab-workspace")):
            assert time.monotonic() < deadline, "the workspace never saved the panel"
            time.sleep(0.3)
        page.reload()
        restored = page.locator(".rh-lab-plot[data-plot='task-states']")
        expect(restored).to_be_visible()
        frame = page.frame_locator(".rh-lab-plot[data-plot='task-states'] iframe")
        expect(frame.locator("canvas").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "lab-panel-restored.png"))
        sidebar = page.locator("#rhapsody-lab-sessions")
        card = sidebar.locator(".rh-lab-session[data-uid='ui-demo']")
        if not card.is_visible():
            page.locator('li.lm-TabBar-tab[data-id="rhapsody-lab-sessions"]').click()
        expect(card).to_be_visible()
        cells = page.locator(".jp-Notebook .jp-CodeCell")
        expect(cells).to_have_count(len(CELLS))  # the unsaved empty cell is gone
        cells.nth(len(CELLS) - 1).locator(".jp-InputArea-editor").click()
        page.keyboard.press("Escape")
        page.keyboard.press("b")  # a new cell below, for the stop
        expect(cells).to_have_count(len(CELLS) + 1)

        # the kernel announced itself (pid, kernel id) in the server's registry
        entries = [json.loads(f.read_text()) for f in lab["registry"].glob("*.json")]
        assert [e["uid"] for e in entries] == ["ui-demo"]
        assert entries[0]["kernel_id"] and entries[0]["dashboard"]["prefix"].startswith(
            "/lab-test/rhapsody-lab/dashboard/")

        # stopping the session withdraws it from the sidebar
        last = cells.nth(len(CELLS)).locator(".jp-InputArea-editor")
        last.click()
        page.keyboard.type("%rhapsody stop")
        page.keyboard.press("Shift+Enter")
        expect(card).to_have_count(0)
        expect(sidebar).to_contain_text("No live sessions")
        assert list(lab["registry"].glob("*.json")) == []


def test_resources_panel_draws_cpu_and_memory_once_telemetry_polls(lab):
    from playwright.sync_api import expect

    from rhapsody_lab.dashboard.resources import TITLE, WAITING_TITLE

    with _lab_page(lab, "resources.ipynb", "lab-resources-failure.png") as page:
        cells = page.locator(".jp-Notebook .jp-CodeCell")
        _run_cell(page, cells, 0)  # %rhapsody start: no telemetry yet

        # the panel opened before telemetry runs says so
        card = page.locator("#rhapsody-lab-sessions .rh-lab-session[data-uid='res-demo']")
        button = card.locator("button.rh-lab-plot-button[data-plot='resources']")
        expect(button).to_be_visible()
        button.click()
        panel = page.locator(".rh-lab-plot[data-plot='resources']")
        expect(panel).to_be_visible()
        expect(panel.locator("iframe")).to_have_attribute(
            "src", re.compile(r"/lab-test/rhapsody-lab/dashboard/.+/resources$"))
        frame = page.frame_locator(".rh-lab-plot[data-plot='resources'] iframe")
        expect(frame.locator("canvas").first).to_be_visible()
        plot = next(f for f in page.frames if f.url.endswith("/resources"))
        deadline = time.monotonic() + 20
        while (shown := plot.evaluate(RESOURCES_IN_PLOT)) is None:
            assert time.monotonic() < deadline, "the resources document never loaded"
            time.sleep(0.3)
        assert shown["title"] == WAITING_TITLE and not shown["series"], shown

        # the user starts telemetry (and some tasks): the open panel picks it up
        _run_cell(page, cells, 1)
        deadline = time.monotonic() + 30
        counts: list[int] = []
        while time.monotonic() < deadline:
            shown = plot.evaluate(RESOURCES_IN_PLOT)
            n = sum(len(v) for v in shown["series"].values())
            if n and (not counts or n > counts[-1]):
                counts.append(n)
            if len(counts) >= 3:
                break
            time.sleep(0.4)
        assert len(counts) >= 3, (counts, shown)  # readings keep arriving
        assert shown["title"] == TITLE
        kinds = {name.rsplit(" ", 1)[-1] for name in shown["series"]}
        assert {"cpu", "memory"} <= kinds, shown["series"].keys()
        values = [v for vs in shown["series"].values() for v in vs]
        assert all(0.0 <= v <= 100.0 for v in values), values
        assert any(v > 0.0 for v in shown["series"][next(
            n for n in shown["series"] if n.endswith(" memory"))])
        expect(frame.locator("canvas").first).to_be_visible()
        # nothing went to the notebook's stderr (Bokeh warned of the empty plot once)
        expect(page.locator(".jp-OutputArea-output[data-mime-type="
                            "'application/vnd.jupyter.stderr']")).to_have_count(0)
        page.wait_for_timeout(500)  # let the last streamed rows paint
        page.screenshot(path=str(ARTIFACTS / "lab-resources-panel.png"))
