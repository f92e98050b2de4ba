"""Shared fixtures. ``async def`` tests run on a fresh event loop each (no plugin needed)."""

from __future__ import annotations

import asyncio
import inspect
import os
import sys

import pytest

HERE = os.path.dirname(__file__)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from real_env import child_processes  # noqa: E402


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    """Run coroutine test functions with ``asyncio.run``."""
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        names = pyfuncitem._fixtureinfo.argnames
        kwargs = {n: pyfuncitem.funcargs[n] for n in names}
        marker = pyfuncitem.get_closest_marker("timeout")  # pytest-timeout's, if longer
        bound = max(240, marker.args[0] - 10) if marker and marker.args else 240
        asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), timeout=bound))
        return True
    return None


@pytest.fixture
def no_children():
    """Assert a test leaves no child process of this interpreter behind.

    Children alive when the test starts (a session-scoped fixture's server, such as the
    shared vLLM server of ``tests/inference``) are not the test's and are not counted.
    """
    before = child_processes()
    yield
    import time
    deadline = time.time() + 5
    while time.time() < deadline:
        kids = _children(before)
        if not kids:
            return
        time.sleep(0.1)
    pytest.fail(f"child processes left behind: {kids}")


def _children(before: dict[int, str]) -> list[str]:
    return [f"{pid}:{cmd}" for pid, cmd in child_processes().items()
            if before.get(pid) != cmd]
