"""The installed package gives a working extension: both sides listed, enabled, OK."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

JUPYTER = shutil.which("jupyter", path=os.path.dirname(sys.executable))
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _jupyter(*args: str) -> str:
    if JUPYTER is None:
        pytest.fail(f"no `jupyter` next to {sys.executable}: install the notebook extra")
    out = subprocess.run([JUPYTER, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return ANSI.sub("", out.stdout + out.stderr)


def test_labextension_is_installed_enabled_and_ok():
    text = _jupyter("labextension", "list")
    assert re.search(r"rhapsody-lab v\S+ enabled\s+OK \(python, rhapsody-lab\)", text), text


def test_server_extension_is_enabled_and_validates():
    text = _jupyter("server", "extension", "list")
    assert re.search(r"rhapsody_lab\.server\s+enabled", text), text
    assert re.search(r"rhapsody_lab\.server\s+OK", text), text
