"""FluxExecutionBackend refusing bad input with clear errors (a real flux-core instance)."""

from __future__ import annotations

import pytest
from flux_site import require_flux

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.errors import (
    BackendError,
    ResourceError,
    SessionError,
    TaskValidationError,
)
from rhapsody_lab.backends import FluxExecutionBackend

_INSTALL = require_flux()


@pytest.fixture(autouse=True)
def _no_flux_uri(monkeypatch):
    monkeypatch.delenv("FLUX_URI", raising=False)


_BAD_OPTIONS = [
    ({"ranks": 0}, "ranks", TaskValidationError),
    ({"cores_per_rank": "2"}, "cores_per_rank", TaskValidationError),
    ({"gpus_per_rank": -1}, "gpus_per_rank", TaskValidationError),
    ({"type": "openmp"}, "type", TaskValidationError),
    ({"rank": 2}, "rank", TaskValidationError),
    ({"timeout": 0}, "timeout", TaskValidationError),
    ({"env": ["A=1"]}, "env", TaskValidationError),
    ({"cwd": "/no/such/dir"}, "cwd", TaskValidationError),
    ({"cores_per_rank": 10_000}, None, ResourceError),
    ({"gpus_per_rank": 1}, None, ResourceError),
]


async def test_bad_task_options_are_refused_at_submit():
    async with Session([FluxExecutionBackend()]) as session:
        for opts, field, err in _BAD_OPTIONS:
            task = ComputeTask(executable="true", task_backend_specific_kwargs=opts)
            with pytest.raises(err) as info:
                await session.submit_tasks([task])
            if field is not None:
                assert info.value.field == f"task_backend_specific_kwargs.{field}", opts
            if "rank" in opts:
                assert "did you mean 'ranks'" in str(info.value)
        assert "10000 cores" in _message(session, {"cores_per_rank": 10_000})
        ok = ComputeTask(executable="true")  # the backend still takes good tasks
        await session.submit_tasks([ok])
        assert (await ok).state == "DONE"


def _message(session, opts) -> str:
    try:
        session.backends["flux"].check_task(ComputeTask(executable="true",
                                                        task_backend_specific_kwargs=opts))
    except (TaskValidationError, ResourceError) as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize("kwargs, words", [
    ({"test_size": 0}, "test_size"),
    ({"uri": "not-a-uri"}, "uri"),
    ({"prefix": "/no/such/prefix"}, "prefix"),
    ({"start_timeout": -1}, "start_timeout"),
    ({"max_jobs": 0}, "max_jobs"),
    ({"validate": "yes"}, "validate"),
])
def test_bad_constructor_input(kwargs, words):
    with pytest.raises(SessionError, match=words):
        FluxExecutionBackend(**kwargs)


async def test_a_wrong_prefix_or_uri_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("RHAPSODY_LAB_FLUX_PREFIX", str(tmp_path))
    with pytest.raises(BackendError, match=r"45-flux\.sh"):
        await FluxExecutionBackend()
    monkeypatch.delenv("RHAPSODY_LAB_FLUX_PREFIX")
    with pytest.raises(BackendError, match="could not connect"):
        await FluxExecutionBackend(uri=f"local://{tmp_path}/none", start_timeout=10)


