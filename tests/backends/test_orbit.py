"""OrbitExecutionBackend: RHAPSODY's constructor, validated; refuses clearly on start.

rhapsody_lab cannot drive an ORBIT endpoint yet (see the module docstring): the backend
must be constructible with RHAPSODY's arguments, name a bad one, and fail at ``await``
with a BackendError, leaving a session usable.
"""

from __future__ import annotations

import pytest

from rhapsody_lab.api import BackendError, ComputeTask, Session, SessionError
from rhapsody_lab.backends import get_backend
from rhapsody_lab.backends.execution.orbit import OrbitExecutionBackend
from rhapsody_lab.backends.registry import BackendRegistry


def test_constructed_with_rhapsodys_arguments():
    backend = OrbitExecutionBackend(broker_url="https://127.0.0.1:8000", endpoint_name="hpc",
                                    backends=["dragon_v3"], batch_window=0, batch_limit=8,
                                    start_timeout=5, init_timeout=5)
    assert backend.name == "orbit" and backend.remote_backends == ["dragon_v3"]
    assert BackendRegistry.get_backend_class("orbit") is OrbitExecutionBackend
    assert isinstance(get_backend("orbit", endpoint_name="x"), OrbitExecutionBackend)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"broker_url": "ftp://x"}, "broker_url"),
    ({"endpoint_name": ""}, "endpoint_name"),
    ({"backends": []}, "backends"),
    ({"batch_window": -1}, "batch_window"),
    ({"batch_limit": 0}, "batch_limit"),
    ({"start_timeout": 0}, "start_timeout"),
    ({"session_kwargs": [1]}, "session_kwargs"),
])
def test_bad_argument_is_named(kwargs, field):
    with pytest.raises(SessionError, match=field):
        OrbitExecutionBackend(**kwargs)


async def test_await_refuses_with_a_reason():
    with pytest.raises(BackendError, match="ORBIT endpoint"):
        await OrbitExecutionBackend(broker_url="https://127.0.0.1:8000")


async def test_session_refuses_it_at_start():
    with pytest.raises(BackendError, match="orbit"):
        async with Session(backends=[OrbitExecutionBackend()]) as session:
            await session.submit_tasks([ComputeTask(function=abs, args=(-2,))])
