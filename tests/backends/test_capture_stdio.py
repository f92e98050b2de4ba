"""capture_stdio and the result contract on the concurrent backend (issue 22 point 4.2).

``ComputeTask(capture_stdio=True)``: an executable's output goes to ``<work_dir>/<uid>.stdout``
and ``.stderr`` (the session's work_dir), whose paths are its ``stdout``/``stderr``, as in
RHAPSODY. Every task has ``str`` stdout and stderr once DONE or FAILED, function tasks too.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import pytest

from rhapsody_lab.api import ComputeTask, Session
from rhapsody_lab.api.errors import TaskExecutionError, TaskValidationError
from rhapsody_lab.backends import ConcurrentExecutionBackend


def _ok():
    return 7


def _none():
    return None


def _boom():
    raise ValueError("intentional")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _backends():
    return [ConcurrentExecutionBackend(max_workers=2, name="threads"),
            ConcurrentExecutionBackend(ProcessPoolExecutor(1), name="procs")]


async def test_capture_stdio_writes_files_in_the_session_work_dir(tmp_path):
    work = tmp_path / "run"
    shell = ["-c", "echo hello; echo err >&2"]
    ok = ComputeTask(executable="/bin/sh", arguments=shell, capture_stdio=True)
    bad = ComputeTask(executable="/bin/sh", arguments=["-c", "echo out; echo why >&2; exit 3"],
                      capture_stdio=True)
    late = ComputeTask(executable="/bin/sleep", arguments=["5"], capture_stdio=True,
                       task_backend_specific_kwargs={"timeout": 0.2})
    missing = ComputeTask(executable="/no/such/program", capture_stdio=True)
    plain = ComputeTask(executable="/bin/echo", arguments=["plain"])
    async with Session([ConcurrentExecutionBackend(max_workers=4)], work_dir=work) as s:
        await s.submit_tasks([ok, bad, late, missing, plain])
        await s.wait_tasks([ok, bad, late, missing, plain])
    assert ok.state == "DONE" and ok.exit_code == 0
    assert ok.stdout == os.path.join(work, f"{ok.uid}.stdout")
    assert ok.stderr == os.path.join(work, f"{ok.uid}.stderr")
    assert (_read(ok.stdout), _read(ok.stderr)) == ("hello\n", "err\n")
    assert bad.state == "FAILED" and bad.exit_code == 3
    assert _read(bad.stdout) == "out\n" and _read(bad.stderr) == "why\n"
    assert isinstance(bad.exception, TaskExecutionError)
    assert late.state == "FAILED" and "timed out after 0.2s" in _read(late.stderr)
    assert missing.state == "FAILED" and missing.exit_code == 127
    assert "not found: /no/such/program" in _read(missing.stderr)
    assert plain.stdout == "plain\n" and plain.stderr == ""  # without it: the text


async def test_capture_stdio_without_a_session_uses_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = ComputeTask(executable="/bin/echo", arguments=["here"], capture_stdio=True)
    async with ConcurrentExecutionBackend(max_workers=1) as b, Session([b]) as s:
        await s.submit_tasks([t])
        await t
    assert t.stdout == os.path.join(str(tmp_path), f"{t.uid}.stdout")
    assert _read(t.stdout) == "here\n"


def test_capture_stdio_must_be_a_bool():
    with pytest.raises(TaskValidationError, match="capture_stdio must be True or False") as e:
        ComputeTask(executable="/bin/true", capture_stdio="yes")
    assert e.value.field == "capture_stdio"


@pytest.mark.parametrize("which", ["threads", "procs"])
async def test_function_tasks_have_str_stdout_and_stderr_once_done_or_failed(which, tmp_path):
    """RHAPSODY's result contract: DONE gives stdout str(return_value), stderr ''; FAILED
    gives stdout '' and the traceback in stderr. capture_stdio is ignored for functions."""
    tasks = [ComputeTask(function=_ok, backend=which),
             ComputeTask(function=_none, backend=which, capture_stdio=True),
             ComputeTask(function=_boom, backend=which)]
    async with Session(_backends(), work_dir=tmp_path) as s:
        await s.submit_tasks(tasks)
        await s.wait_tasks(tasks)
    ok, none, boom = tasks
    assert (ok.state, ok.stdout, ok.stderr) == ("DONE", "7", "")
    assert (none.state, none.stdout, none.stderr) == ("DONE", "None", "")
    assert boom.state == "FAILED" and boom.stdout == ""
    assert "ValueError: intentional" in boom.stderr
    assert not list(tmp_path.iterdir())  # no files for function tasks
