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


def test_report_from_a_session_and_cli_errors(journal, tmp_path, capsys):
    out = write_report(journal, tmp_path / "r.html", title="my run")
    with open(out) as f:
        assert "my run" in f.read()
    assert main_report(str(tmp_path / "missing.jsonl"), str(tmp_path / "x.html")) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main_report(journal, str(tmp_path / "no" / "dir" / "x.html")) == 1
