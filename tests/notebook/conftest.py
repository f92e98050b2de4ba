"""Fixtures of the notebook tests: a real IPython shell with the extension loaded."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("IPython")
pytest.importorskip("ipywidgets")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FAKE_SERVER = os.path.join(ROOT, "tests", "inference", "fake_openai_server.py")
if HERE not in sys.path:
    sys.path.insert(0, HERE)  # for rh_nb_helpers


@pytest.fixture
def ip():
    """A terminal-style ``InteractiveShell`` (no running loop: the background-loop mode)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    before = set(shell.user_ns)
    shell.run_line_magic("load_ext", "rhapsody_lab.notebook")
    yield shell
    shell.run_line_magic("unload_ext", "rhapsody_lab.notebook")
    for name in set(shell.user_ns) - before:
        shell.user_ns.pop(name, None)


@pytest.fixture
def fake_endpoint():
    """The inference tests' stand-in OpenAI server, as a subprocess; yields its /v1 URL."""
    if not os.path.exists(FAKE_SERVER):
        pytest.skip("the stand-in OpenAI server of tests/inference is not here")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, FAKE_SERVER, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.skip("the stand-in OpenAI server did not start")
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(5)
