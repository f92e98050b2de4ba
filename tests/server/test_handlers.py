"""The server extension against a real Jupyter server, a real Session and a real Bokeh
dashboard: sessions listing, HTTP and websocket proxying, authentication, refusals."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import stat
import subprocess
import time

import local_user
import pytest
from tornado.httpclient import HTTPClientError

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.backends import ConcurrentExecutionBackend
from rhapsody_lab.notebook.publish import Publisher
from rhapsody_lab.server.registry import dashboard_prefix, entry_key, write_entry


def nap():
    time.sleep(0.01)


async def _sessions(jp_fetch) -> list[dict]:
    response = await jp_fetch("rhapsody-lab", "sessions")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    return json.loads(response.body)["sessions"]


async def test_sessions_reply_carries_the_engines_state_order(jp_fetch):
    from rhapsody_lab.api.states import STATES

    response = await jp_fetch("rhapsody-lab", "sessions")
    assert json.loads(response.body)["states"] == list(STATES)


async def _wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        await asyncio.sleep(0.2)


@pytest.fixture
def live(registry, jp_base_url, tmp_path, jp_serverapp, jp_asyncio_loop,
         no_children):
    """A real Session with a real dashboard behind the proxy, announced in the registry."""
    session = Session([ConcurrentExecutionBackend(max_workers=2)], work_dir=tmp_path)
    publisher = Publisher(session, directory=registry, base_url=jp_base_url, interval=0.2)

    async def start():
        await session.start()
        publisher.start()  # on the session's loop, as the notebook controller does

    jp_asyncio_loop.run_until_complete(start())
    try:
        yield session, publisher
    finally:
        jp_asyncio_loop.run_until_complete(session.close())
        publisher.stop()


async def test_sessions_lists_a_live_session_with_counts_and_proxied_plots(
        jp_fetch, jp_base_url, live, registry):
    session, publisher = live
    tasks = [ComputeTask(function=nap) for _ in range(20)]
    await asyncio.gather(*await session.submit_tasks(tasks))
    session.get_statistics()  # deliver the events: counts() is what the publisher reads

    async def listed():
        found = [s for s in await _sessions(jp_fetch) if s["key"] == publisher.key]
        if found and found[0]["counts"].get("DONE") == 20 and found[0]["dashboard"]:
            return found[0]
        return None

    s = await _wait_for(listed)
    assert s["uid"] == session.uid and s["pid"] == os.getpid()
    assert s["backends"] == {"concurrent": {"capacity": 2,
                                            "kind": "ConcurrentExecutionBackend",
                                            "state": "RUNNING", "pilot": None}}
    assert s["total"] == 20 and s["dashboard_error"] is None
    prefix = dashboard_prefix(jp_base_url, publisher.key)
    assert set(s["dashboard"]) >= {"task-states", "utilisation", "throughput", "task-stream"}
    assert s["dashboard"]["throughput"] == f"{prefix}/throughput"
    assert publisher.server.prefix == prefix  # the Bokeh server lives under the proxy path
    assert (registry / f"{publisher.key}.json").exists()

    # closing the session removes its entry; the list follows
    await session.close()
    await asyncio.get_running_loop().run_in_executor(None, publisher.stop)
    assert not (registry / f"{publisher.key}.json").exists()
    assert [x for x in await _sessions(jp_fetch) if x["key"] == publisher.key] == []


async def test_proxy_forwards_http_and_websocket_to_the_bokeh_server(
        jp_fetch, jp_ws_fetch, jp_base_url, live):
    session, publisher = live

    async def ready():
        return [s for s in await _sessions(jp_fetch) if s["dashboard"]]

    await _wait_for(ready)
    key = publisher.key
    # the Bokeh server listens on a Unix socket in a private directory, no TCP port
    entry = json.loads((publisher.directory / f"{key}.json").read_text())["dashboard"]
    assert "port" not in entry and entry["socket"] == publisher.server.socket_path
    assert publisher.server._server.unix_socket == entry["socket"]
    assert publisher.server._server.port is None
    parent = os.lstat(os.path.dirname(entry["socket"]))
    assert stat.S_IMODE(parent.st_mode) == 0o700 and parent.st_uid == os.geteuid()
    page = await jp_fetch("rhapsody-lab", "dashboard", key, "task-states")
    assert page.code == 200
    html = page.body.decode()
    assert "bokeh" in html.lower()
    prefix = dashboard_prefix(jp_base_url, key)
    # Bokeh's own resources are addressed through the proxy path, and answer there
    static = re.search(r'src="(' + re.escape(prefix) + r'/static/js/bokeh[^"]*)"', html)
    assert static, html[:2000]
    js_path = static.group(1).split("?")[0][len(jp_base_url):]
    js = await jp_fetch(*js_path.split("/"))
    assert js.code == 200 and len(js.body) > 100_000
    assert "javascript" in js.headers["Content-Type"]

    # the websocket: Bokeh's protocol through the proxy (subprotocols "bokeh" + token)
    token = re.search(r'"token"\s*:\s*"([^"]+)"', html).group(1)
    ws = await jp_ws_fetch("rhapsody-lab", "dashboard", key, "task-states", "ws",
                           subprotocols=["bokeh", token])
    try:
        assert ws.selected_subprotocol == "bokeh"
        header = await asyncio.wait_for(ws.read_message(), 20)
        assert json.loads(header)["msgtype"] == "ACK"
    finally:
        ws.close()

    # the live document changes as tasks run: a PULL-DOC round trip shows more data
    await asyncio.gather(*await session.submit_tasks([ComputeTask(function=nap)
                                                      for _ in range(10)]))
    ws = await jp_ws_fetch("rhapsody-lab", "dashboard", key, "task-states", "ws",
                           subprotocols=["bokeh", token])
    try:
        parts = [await asyncio.wait_for(ws.read_message(), 20) for _ in range(3)]
        assert json.loads(parts[0])["msgtype"] == "ACK"
        req = json.dumps({"msgid": "1", "msgtype": "PULL-DOC-REQ"})
        for part in (req, "{}", "{}"):
            await ws.write_message(part)
        reply = [await asyncio.wait_for(ws.read_message(), 20) for _ in range(3)]
        assert json.loads(reply[0])["msgtype"] == "PULL-DOC-REPLY"
        assert "DONE" in reply[2]  # the task-states document, served through the proxy
    finally:
        ws.close()


async def test_requests_without_a_token_are_refused(http_server_client, jp_base_url,
                                                     registry):
    key = entry_key(os.getpid(), "s")
    write_entry({"key": key, "pid": os.getpid(), "uid": "s",
                 "dashboard": {"socket": "/nonexistent/bokeh.sock",
                               "prefix": dashboard_prefix(jp_base_url, key)}},
                registry)
    for path in ("rhapsody-lab/sessions", f"rhapsody-lab/dashboard/{key}/task-states"):
        url = f"{jp_base_url}{path}"
        response = await http_server_client.fetch(url, raise_error=False,
                                                  follow_redirects=False)
        assert response.code == 403, (url, response.code)  # refused, never redirected
        wrong = await http_server_client.fetch(
            url, raise_error=False, follow_redirects=False,
            headers={"Authorization": "token not-the-token"})
        assert wrong.code == 403, (url, wrong.code)


async def test_proxy_refuses_unregistered_and_dashboardless_sessions(
        jp_fetch, jp_base_url, registry):
    key = entry_key(os.getpid(), "nodash")
    write_entry({"key": key, "pid": os.getpid(), "uid": "nodash", "dashboard": None},
                registry)
    other = entry_key(os.getpid(), "elsewhere")  # a dashboard for another server's path
    write_entry({"key": other, "pid": os.getpid(), "uid": "elsewhere",
                 "dashboard": {"socket": "/nonexistent/bokeh.sock",
                               "prefix": "/other/rhapsody-lab/dashboard/x",
                               "plots": ["task-states"]}}, registry)
    for k in ("999999-nosuch", key, other):
        with pytest.raises(HTTPClientError) as err:
            await jp_fetch("rhapsody-lab", "dashboard", k, "task-states")
        assert err.value.code == 404, k
    listed = {s["key"]: s for s in await _sessions(jp_fetch)}
    assert listed[key]["dashboard"] == {} and listed[other]["dashboard"] == {}


async def test_stale_and_dead_entries_are_ignored(jp_fetch, registry):
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = entry_key(dead.pid, "gone")
    write_entry({"key": gone, "pid": dead.pid, "uid": "gone"}, registry)
    frozen = entry_key(os.getpid(), "frozen")
    path = write_entry({"key": frozen, "pid": os.getpid(), "uid": "frozen"}, registry)
    data = json.loads(path.read_text())
    data["updated"] = time.time() - 3600
    path.write_text(json.dumps(data))
    (registry / "garbage.json").write_text("{not json")
    alive = entry_key(os.getpid(), "alive")
    write_entry({"key": alive, "pid": os.getpid(), "uid": "alive"}, registry)

    assert [s["key"] for s in await _sessions(jp_fetch)] == [alive]
    assert not (registry / f"{gone}.json").exists()  # a dead kernel's entry is pruned
    assert path.exists()  # a stale one is only ignored (its process may recover)
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("rhapsody-lab", "dashboard", frozen, "task-states")
    assert err.value.code == 404


@pytest.mark.skipif(local_user.missing() is not None, reason=str(local_user.missing()))
async def test_another_user_cannot_reach_a_published_dashboard(jp_fetch, live):
    _session, publisher = live

    async def ready():
        return [s for s in await _sessions(jp_fetch) if s["dashboard"]]

    await _wait_for(ready)
    path = json.loads((publisher.directory / f"{publisher.key}.json").read_text()
                      )["dashboard"]["socket"]
    loop = asyncio.get_running_loop()
    with local_user.other_user() as user:
        seen = await loop.run_in_executor(None, lambda: local_user.probe(user, socket=path))
    assert seen["unix"] == {"listdir": "PermissionError", "connect": "PermissionError"}, seen
    # while its owner reads it through the proxy
    page = await jp_fetch("rhapsody-lab", "dashboard", publisher.key, "task-states")
    assert page.code == 200 and b"bokeh" in page.body.lower()


def _listener(path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen(8)
    s.setblocking(False)
    return s


async def test_proxy_refuses_sockets_outside_a_private_directory(jp_fetch, jp_base_url,
                                                                  registry, tmp_path):
    """An entry (anyone may be able to write one) must not lead the proxy to a socket
    in a directory other users can enter, or owned by someone else, or through a link."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "link.sock").symlink_to(shared / "open.sock")
    listeners = [_listener(shared / "open.sock")]
    cases = {"open": str(shared / "open.sock"), "link": str(private / "link.sock"),
             "file": str(private / "plain"), "relative": "private/x.sock"}
    (private / "plain").write_text("")
    if os.geteuid() == 0:  # a private directory of another uid (root can bind there)
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        listeners.append(_listener(theirs / "their.sock"))
        os.chown(theirs / "their.sock", 65534, 65534)
        os.chown(theirs, 65534, 65534)
        cases["theirs"] = str(theirs / "their.sock")
    try:
        for name, path in cases.items():
            key = entry_key(os.getpid(), name)
            write_entry({"key": key, "pid": os.getpid(), "uid": name,
                         "dashboard": {"socket": path, "plots": ["task-states"],
                                       "prefix": dashboard_prefix(jp_base_url, key)}},
                        registry)
            with pytest.raises(HTTPClientError) as err:
                await jp_fetch("rhapsody-lab", "dashboard", key, "task-states")
            assert err.value.code == 403, (name, err.value)
        listed = {s["uid"]: s for s in await _sessions(jp_fetch)}
        for name in cases:  # the sidebar says why, and offers no plot
            assert listed[name]["dashboard"] == {}
            assert "not private" in listed[name]["dashboard_error"]
        for listener in listeners:  # nobody connected to them
            with pytest.raises(BlockingIOError):
                listener.accept()
    finally:
        for listener in listeners:
            listener.close()
