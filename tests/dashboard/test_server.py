"""The Bokeh server: one app per plot on 127.0.0.1, fetched over HTTP, fed live."""

from __future__ import annotations

import asyncio
import time
import urllib.request

from rhapsody_lab import dashboard
from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.backends import ConcurrentExecutionBackend
from rhapsody_lab.observe import attach_metrics


def nap():
    time.sleep(0.01)


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=20) as r:
        return r.status, r.read().decode()


async def test_server_apps_answer_and_stream_live_data(tmp_path):
    async with Session([ConcurrentExecutionBackend(max_workers=2)], work_dir=tmp_path) as s:
        server = dashboard.serve(s, interval=0.1)
        try:
            urls = server.urls
            assert set(urls) == {"task-states", "utilisation", "throughput", "task-stream",
                                 "latency", "resources"}
            assert all(u.startswith(f"http://127.0.0.1:{server.port}/") and "bokeh-session-id=" in u
                       for u in urls.values())
            loop = asyncio.get_running_loop()
            for url in urls.values():
                status, page = await loop.run_in_executor(None, _get, url)
                assert status == 200
                assert "Bokeh" in page or "bokeh" in page
            # every GET opened a server session with its own live component
            assert len(server.components("task-states")) == 1
            tasks = [ComputeTask(function=nap) for _ in range(50)]
            await s.submit_tasks(tasks)
            await s.wait_tasks(tasks)
            s.events.drain()
            comp = server.components("task-states")[0]
            stream = server.components("task-stream")[0]
            deadline = time.time() + 10
            while time.time() < deadline and (not comp.source.data["DONE"]
                                              or comp.source.data["DONE"][-1] < 50):
                await asyncio.sleep(0.1)
            assert comp.source.data["DONE"][-1] == 50
            while time.time() < deadline and len(stream.source.data["uid"]) < 50:
                await asyncio.sleep(0.1)
            assert len(stream.source.data["uid"]) == 50
            assert server.metrics is attach_metrics(s)
        finally:
            server.stop()
        assert not server._thread.is_alive()


async def test_dashboard_urls_is_one_server_per_session(tmp_path):
    async with Session([ConcurrentExecutionBackend(max_workers=1)], work_dir=tmp_path) as s:
        urls = dashboard.dashboard_urls(s)
        assert dashboard.dashboard_urls(s) == urls
        status, _ = await asyncio.get_running_loop().run_in_executor(
            None, _get, urls["utilisation"])
        assert status == 200
        from rhapsody_lab.dashboard.server import _servers
        _servers.pop(id(s))[1].stop()
