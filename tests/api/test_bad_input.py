"""Bad input everywhere: every public call raises a rhapsody_lab error naming the field.

Issue 21: the point tests first (each failed on the old main), then a table-driven survey
of Session, tasks, backends, registry, observe.load, dashboard entry points and magics.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from rhapsody_lab.api import AITask, ComputeTask, Session
from rhapsody_lab.api.errors import SessionError, TaskValidationError
from rhapsody_lab.backends import ConcurrentExecutionBackend
from rhapsody_lab.backends.registry import get_backend


def _f():
    return 1


def run(coro):
    return asyncio.run(coro)


# -- point 4: raw exceptions before ---------------------------------------------------
@pytest.mark.parametrize("call, field", [
    (lambda s: s.wait_tasks([5]), "tasks[0]"),
    (lambda s: s.wait_tasks(5), "tasks"),
    (lambda s: s.wait_tasks("task.000001"), "tasks"),
    (lambda s: s.wait_tasks([], timeout=True), "timeout"),
    (lambda s: s.wait_tasks([], timeout=float("nan")), "timeout"),
    (lambda s: s.cancel_task(5), "task"),
    (lambda s: s.cancel_tasks(5), "tasks"),
])
def test_session_calls_refuse_bad_arguments(call, field):
    async def main():
        async with Session([ConcurrentExecutionBackend(max_workers=1)]) as s:
            with pytest.raises(SessionError, match=field.replace("[", r"\[")):
                await call(s)
    run(main())


def test_get_backend_unknown_argument_names_it_with_a_hint():
    with pytest.raises(SessionError, match="bogus") as err:
        get_backend("dask", bogus=1)
    assert "resources" in str(err.value)
    with pytest.raises(SessionError, match="did you mean 'max_workers'"):
        get_backend("concurrent", max_worker=2)
    with pytest.raises(SessionError, match="backend name must be a string"):
        get_backend(["dask"])


def test_aitask_without_arguments_names_the_prompt():
    with pytest.raises(TaskValidationError, match="needs a prompt") as err:
        AITask()
    assert err.value.field == "prompt"
    with pytest.raises(TaskValidationError) as err:
        AITask(prompt="hi", inference_endpoint=5)
    assert err.value.field == "inference_endpoint"


def test_journal_lines_with_wrong_types_are_skipped_and_counted(tmp_path):
    from rhapsody_lab.observe import load
    from rhapsody_lab.observe.journal import Journal
    path = tmp_path / "j.jsonl"
    j = Journal(path, session_uid="s", capacity={"b": 1})
    j([(1.0, "t1", "SUBMITTED", "b", None), (1.5, "t1", "RUNNING", "b", 0),
       (2.0, "t1", "DONE", "b", 0)])
    j.close()
    bad = [{"t": 5, "uid": "x", "state": "DONE", "backend": "b", "slot": None},
           {"t": ["x"], "uid": ["t2"], "state": ["DONE"], "backend": ["b"], "slot": [0]},
           {"t": [1], "uid": [7], "state": ["DONE"], "backend": ["b"], "slot": [0]},
           {"t": [1], "uid": ["t3"], "state": [None], "backend": ["b"], "slot": [0]},
           {"t": [1], "uid": ["t3"], "state": ["DONE"], "backend": [{}], "slot": [0]},
           {"meta": "session", "capacity": [1, 2]}, [1, 2]]
    with open(path, "a") as f:
        for obj in bad:
            f.write(json.dumps(obj) + "\n")
        f.write("{not json\n")
    m = load(path)
    assert m.counts() == {"DONE": 1}
    assert m.skipped_lines == len(bad) + 1
    assert m.capacity == {"b": 1}


# -- point 5: silently accepted before ------------------------------------------------
@pytest.mark.parametrize("task, field, words", [
    (dict(executable="/bin/true", task_backend_specific_kwargs={"cwdd": "/tmp"}),
     "task_backend_specific_kwargs.cwdd", "did you mean 'cwd'"),
    (dict(function=_f, task_backend_specific_kwargs={"timeout": 1}),
     "task_backend_specific_kwargs.timeout", "cannot be stopped"),
    (dict(function=_f, task_backend_specific_kwargs={"env": {"A": "1"}}),
     "task_backend_specific_kwargs.env", "executable tasks only"),
    (dict(executable="/bin/true", task_backend_specific_kwargs={"process_template": {}}),
     "task_backend_specific_kwargs.process_template", "Dragon backend option"),
])
def test_concurrent_refuses_options_it_would_ignore(task, field, words):
    async def main():
        async with Session([ConcurrentExecutionBackend(max_workers=1)]) as s:
            t = ComputeTask(**task)
            with pytest.raises(TaskValidationError, match=words) as err:
                await s.submit_tasks([t])
            assert err.value.field == field
            assert t.state == "NEW"  # nothing of the call was submitted
            ok = ComputeTask(executable="/bin/echo", arguments=["x"],
                             task_backend_specific_kwargs={"cwd": "/tmp", "timeout": 5})
            await s.submit_tasks([ok])
            await s.wait_tasks([ok])
            assert ok.state == "DONE" and ok.stdout == "x\n"
    run(main())


def test_dask_and_vllm_know_their_own_keys():
    from rhapsody_lab.backends._dask_tasks import _TASK_KEYS
    from rhapsody_lab.backends._options import check_keys
    from rhapsody_lab.backends._subprocess import _KNOWN
    keys = (*_TASK_KEYS, *_KNOWN)
    check_keys(ComputeTask(function=_f, task_backend_specific_kwargs={
        "resources": {"GPU": 1}, "retries": 1}), "dask", keys, _KNOWN)
    with pytest.raises(TaskValidationError, match="did you mean 'resources'"):
        check_keys(ComputeTask(function=_f, task_backend_specific_kwargs={
            "resource": {"GPU": 1}}), "dask", keys, _KNOWN)
    with pytest.raises(TaskValidationError, match="cannot be stopped"):
        check_keys(ComputeTask(function=_f, task_backend_specific_kwargs={"timeout": 3}),
                   "dask", keys, _KNOWN)
    from rhapsody_lab.backends import VllmInferenceBackend
    b = VllmInferenceBackend(endpoint="http://127.0.0.1:9/v1")
    with pytest.raises(TaskValidationError, match="known keys: none"):
        b.check_task(AITask(prompt="hi", backend=b.name, task_backend_specific_kwargs={"gpus": 1}))


def test_work_dir_is_created_or_refused_at_construction(tmp_path):
    new = tmp_path / "run" / "42"
    s = Session(work_dir=new)
    assert os.path.isdir(new) and s.work_dir == str(new)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(SessionError, match="not a folder"):
        Session(work_dir=afile)
    with pytest.raises(SessionError, match="cannot be created"):
        Session(work_dir=afile / "sub")
    with pytest.raises(SessionError, match="work_dir"):
        Session(work_dir="")


# -- point 7: display ------------------------------------------------------------------
def test_histogram_range_follows_the_populated_buckets():
    from rhapsody_lab.observe.metrics import Metrics, hist_range
    m = Metrics(live=False)
    events = []
    for i in range(50):
        t0 = 100.0 + i * 0.01
        events += [(t0, f"t{i}", "SUBMITTED", "b", None), (t0 + 0.001, f"t{i}", "RUNNING",
                                                           "b", 0),
                   (t0 + 0.007, f"t{i}", "DONE", "b", 0)]
    m.ingest(events)
    lo, hi = hist_range(m.latency())
    assert 1e-4 <= lo <= 1e-3 and 6e-3 < hi <= 0.1, (lo, hi)
    pytest.importorskip("bokeh")
    from rhapsody_lab.dashboard.components import Latency
    c = Latency(m)
    assert (c.root.x_range.start, c.root.x_range.end) == (lo, hi)
    m.ingest([(200.0, "slow", "SUBMITTED", "b", None), (200.0, "slow", "RUNNING", "b", 0),
              (210.0, "slow", "DONE", "b", 0)])
    c.update()
    assert c.root.x_range.end > 10


def test_report_title_names_the_session_and_date(tmp_path):
    pytest.importorskip("bokeh")
    from rhapsody_lab.dashboard.report import write_report
    from rhapsody_lab.observe.journal import Journal
    path = tmp_path / "j.jsonl"
    j = Journal(path, session_uid="reported", capacity={"b": 1})
    j([(1_765_000_000.0, "t1", "SUBMITTED", "b", None),
       (1_765_000_000.5, "t1", "DONE", "b", 0)])
    j.close()
    with open(write_report(path, tmp_path / "r.html")) as f:
        page = f.read()
    assert "<title>Session reported \u00b7 2025-12-06" in page
    assert "rhapsody_lab report: reported" not in page


def test_start_settle_displays_nothing():
    pytest.importorskip("IPython")
    from IPython.core.formatters import DisplayFormatter

    from rhapsody_lab.notebook._magic_text import _Settle
    data, _ = DisplayFormatter().format(_Settle("start", None))
    assert data == {}
