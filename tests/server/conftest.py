"""pytest-jupyter's server fixtures (``jp_fetch``, ``jp_serverapp``...) for these tests.

Imported here rather than named in ``pytest_plugins`` (allowed only in the root
conftest); its ``pytest_pyfunc_call`` then runs this directory's coroutine tests on the
server's event loop.
"""

from __future__ import annotations

import pytest
from pytest_jupyter.jupyter_server import *  # noqa: F403

from rhapsody_lab.server.registry import ENV_BASE_URL, ENV_DIR


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A private registry directory; the extension's environment changes are undone."""
    directory = tmp_path / "registry"
    monkeypatch.setenv(ENV_DIR, str(directory))
    monkeypatch.delenv(ENV_BASE_URL, raising=False)  # undone after the extension sets it
    return directory


@pytest.fixture
def jp_server_config(registry):
    return {"ServerApp": {"jpserver_extensions": {"rhapsody_lab.server": True}}}
