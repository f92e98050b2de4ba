"""The static HTML report, rendered in headless Debian Chromium."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
import zlib

import pytest

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.backends import ConcurrentExecutionBackend
from rhapsody_lab.dashboard.report import main_report, write_report
from rhapsody_lab.observe import attach_journal

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARTIFACTS = os.path.join(ROOT, "test-artifacts")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def nap():
    time.sleep(0.005)


def boom():
    raise ValueError("x")


@pytest.fixture(scope="module")
def journal(tmp_path_factory):
    import asyncio
    work = tmp_path_factory.mktemp("report")

    async def main():
        async with Session([ConcurrentExecutionBackend(max_workers=2)], work_dir=work,
                           uid="reported") as s:
            j = attach_journal(s)
            tasks = [ComputeTask(function=nap) for _ in range(150)]
            tasks += [ComputeTask(function=boom) for _ in range(5)]
            await s.submit_tasks(tasks)
            await s.wait_tasks(tasks)
        j.close()
        return j.path

    return asyncio.run(main())


def _chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (run .ci/setup.d/30-chromium.sh)")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, timeout=90, text=True)


def _ink(png: bytes) -> float:
    """Fraction of decoded PNG bytes that are not white background (no PIL needed)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        if kind == b"IDAT":
            idat += png[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    return sum(1 for b in raw[::7] if b not in (0, 255)) / len(raw[::7])


def test_report_renders_in_headless_chromium(journal, tmp_path):
    out = tmp_path / "report.html"
    assert main_report(journal, str(out)) == 0
    page = out.read_text()
    assert "reported" in page and "155 tasks" in page
    assert "cdn.bokeh.org" not in page  # BokehJS inline: the report opens offline
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, "dashboard-report.png")
    if os.path.exists(shot):
        os.remove(shot)
    r = _chromium(tmp_path, "--window-size=1200,1700", f"--screenshot={shot}", out.as_uri())
    assert os.path.exists(shot), r.stderr[-2000:]
    with open(shot, "rb") as f:
        ink = _ink(f.read())
    assert ink > 0.01, f"the screenshot looks blank ({ink:.4f} non-white)"
    dom = _chromium(tmp_path, "--dump-dom", out.as_uri()).stdout
    assert 'class="bk-Column"' in dom  # BokehJS ran and mounted the root layout


# the report's resources figure as BokehJS built it: title, and each line's values by name
RESOURCES_SHOWN = """() => {
  const doc = window.Bokeh && window.Bokeh.documents && window.Bokeh.documents[0];
  if (!doc) { return null; }
  const out = {title: null, series: {}};
  for (const m of doc.all_models) {
    if (m.name === 'resources' && m.title) {
      out.title = m.title.text;
      for (const r of m.renderers) {
        const data = r.data_source.data;
        const values = data instanceof Map ? data.get('value') : data['value'];
        out.series[r.name] = Array.from(values || [], Number);
      }
    }
  }
  return out;
}"""


def test_report_with_telemetry_draws_the_resources_plot_in_chromium(tmp_path):
    pytest.importorskip("psutil", reason="the telemetry extra is not installed")
    pytest.importorskip("opentelemetry.sdk", reason="the telemetry extra is not installed")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (test extra)")
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (run .ci/setup.d/30-chromium.sh)")
    import asyncio

    async def main():
        async with Session([ConcurrentExecutionBackend(max_workers=2)], work_dir=tmp_path,
                           uid="with-telemetry") as s:
            j = attach_journal(s)
            tm = await s.start_telemetry(resource_poll_interval=0.1)
            tasks = [ComputeTask(function=nap) for _ in range(40)]
            await s.submit_tasks(tasks)
            await s.wait_tasks(tasks)
            deadline = time.monotonic() + 10
            while len(tm.resource_rows()[1]) < 3:
                assert time.monotonic() < deadline, "no resource readings"
                await asyncio.sleep(0.05)
        j.close()
        return j.path

    out = write_report(asyncio.run(main()), tmp_path / "report.html")
    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"file://{out}")
            page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0",
                                   timeout=30_000)
            shown = page.evaluate(RESOURCES_SHOWN)
            assert shown is not None and shown["title"] == "Resources (% per node)", shown
            kinds = {name.rsplit(" ", 1)[-1] for name in shown["series"]}
            assert {"cpu", "memory"} <= kinds, shown["series"].keys()
            assert all(len(v) >= 3 for v in shown["series"].values()), shown["series"]
            values = [v for vs in shown["series"].values() for v in vs]
            assert all(0.0 <= v <= 100.0 for v in values), values
            # the figure is drawn: a canvas per plot, the resources one among them
            sync_api.expect(page.locator("canvas").first).to_be_visible(timeout=30_000)
            assert page.locator("canvas").count() >= 6  # 5 task plots + resources
            page.screenshot(path=os.path.join(ARTIFACTS, "dashboard-report-resources.png"),
                            full_page=True)
        finally:
            browser.close()


def test_report_from_a_session_and_cli_errors(journal, tmp_path, capsys):
    out = write_report(journal, tmp_path / "r.html", title="my run")
    with open(out) as f:
        assert "my run" in f.read()
    assert main_report(str(tmp_path / "missing.jsonl"), str(tmp_path / "x.html")) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main_report(journal, str(tmp_path / "no" / "dir" / "x.html")) == 1
