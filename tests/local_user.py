"""A throw-away second user of this host, and what that user can get from a dashboard.

``other_user()`` (a context manager) creates one with ``useradd`` and removes it with
``userdel -r``; it needs root (the CI runs the tests as root), the callers skip otherwise.
``probe(user, ...)`` runs ``PROBE`` as that user with the system Python (standard library
only: the user cannot read this venv's packages, and must not need them): it tries the
dashboard's Unix socket, its TCP page without credentials, and its websocket with forged
tokens, and reports what came back.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

SYSTEM_PYTHON = "/usr/bin/python3"


def missing() -> str | None:
    """Why no second user can be made here (None: it can)."""
    if os.geteuid() != 0:
        return "needs root to create a second local user (the CI runs the tests as root)"
    for tool in ("useradd", "userdel", "runuser"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is missing (the probe runs as the other user)"
    return None


@contextlib.contextmanager
def other_user() -> Iterator[str]:
    """A fresh local user (name yielded), deleted with its home afterwards."""
    name = f"rhx{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True,
                   capture_output=True, timeout=60)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True, timeout=60)


# Run as the other user. argv[1]: JSON {"socket": path|None, "tcp": [host, port, path]|None}.
PROBE = r'''
import base64, http.client, json, os, socket, sys

args = json.loads(sys.argv[1])
out = {"uid": os.getuid()}


def ws_attempt(connect, path, token):
    """Upgrade ``path`` with Bokeh's subprotocols; the first frame's opcode, if any."""
    s = connect()
    s.settimeout(5)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\nOrigin: http://localhost\r\n"
               f"Sec-WebSocket-Protocol: bokeh, {token}\r\n\r\n").encode())
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head else None
        frame = rest
        while status == 101 and not frame:
            chunk = s.recv(4096)
            if not chunk:
                break
            frame += chunk
        opcode = frame[0] & 0x0F if frame else None
        return {"status": status, "first_opcode": opcode}
    except OSError as exc:
        return {"status": None, "error": type(exc).__name__}
    finally:
        s.close()


def b64(obj):
    raw = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# an unsigned token, as Bokeh makes them without a secret key
forged = b64({"session_id": "x" * 44, "session_expiry": 4102444800})

if args.get("socket"):
    path = args["socket"]
    u = {}
    try:
        os.listdir(os.path.dirname(path))
        u["listdir"] = "ok"
    except OSError as exc:
        u["listdir"] = type(exc).__name__
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        u["connect"] = "ok"
        u["got"] = s.recv(100).decode(errors="replace")
        s.close()
    except OSError as exc:
        u["connect"] = type(exc).__name__
    out["unix"] = u

if args.get("tcp"):
    host, port, page = args["tcp"]
    t = {}
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.request("GET", page)
    r = c.getresponse()
    t["page"] = r.status
    t["page_has_token"] = b'"token"' in r.read()
    c.close()
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.request("GET", page + "?bokeh-session-id=" + "y" * 44)  # an unsigned id
    r = c.getresponse()
    t["unsigned_id"] = r.status
    r.read()
    c.close()
    t["ws"] = ws_attempt(lambda: socket.create_connection((host, port), 10),
                         page + "/ws", forged)
    out["tcp"] = t

print(json.dumps(out))
'''


def probe(user: str, *, socket: str | None = None,
          tcp: tuple[str, int, str] | None = None) -> dict:
    """What ``user`` gets from the dashboard's socket and/or TCP page (see ``PROBE``)."""
    args = json.dumps({"socket": socket, "tcp": list(tcp) if tcp else None})
    done = subprocess.run(["runuser", "-u", user, "--", SYSTEM_PYTHON, "-I", "-c", PROBE,
                           args], capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
