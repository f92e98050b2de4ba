"""The bad-input survey (issue 21): every public call, bad arguments, a clear error.

Each row calls one public entry point with bad arguments; it must raise a RhapsodyError
subclass whose message names the field (or, for a magic, print its usage and an error
naming it). ``test_survey_count`` prints "tried N, clear error N".
"""

from __future__ import annotations

import asyncio

import pytest

from rhapsody_lab import observe
from rhapsody_lab.api import AITask, BaseTask, ComputeTask, Session
from rhapsody_lab.api.errors import RhapsodyError
from rhapsody_lab.backends import (
    ConcurrentExecutionBackend,
    DaskExecutionBackend,
    DragonExecutionBackendV3,
    VllmInferenceBackend,
)
from rhapsody_lab.backends.registry import backend_class, get_backend


def _f():
    return 1


def _session():
    return Session([ConcurrentExecutionBackend(max_workers=1)])


async def _in_session(call):
    async with _session() as s:
        await call(s)


def _closing(call):
    """Call ``call(session)`` and close the session (its observer process) after."""
    s = _session()
    try:
        return call(s)
    finally:
        asyncio.run(s.close())


def _aio(call):
    return lambda: asyncio.run(_in_session(call))


# (name, callable raising, a word the message must contain: the field)
ROWS = [
    # Session
    ("Session(uid=5)", lambda: Session(uid=5), "uid"),
    ("Session(backends=5)", lambda: Session(backends=5), "backends"),
    ("Session(backends=[cls])", lambda: Session([ConcurrentExecutionBackend]), "class"),
    ("Session(work_dir=5)", lambda: Session(work_dir=5), "work_dir"),
    ("add_backend(5)", lambda: _session().add_backend(5), "backend"),
    ("submit_tasks(task)", _aio(lambda s: s.submit_tasks(ComputeTask(function=_f))),
     "list"),
    ("submit_tasks([5])", _aio(lambda s: s.submit_tasks([5])), "ComputeTask"),
    ("submit_tasks(unknown backend)",
     _aio(lambda s: s.submit_tasks([ComputeTask(function=_f, backend="nope")])), "nope"),
    ("wait_tasks([5])", _aio(lambda s: s.wait_tasks([5])), "tasks[0]"),
    ("wait_tasks(5)", _aio(lambda s: s.wait_tasks(5)), "tasks"),
    ("wait_tasks(unsubmitted)", _aio(lambda s: s.wait_tasks([ComputeTask(function=_f)])),
     "not submitted"),
    ("wait_tasks(timeout=-1)", _aio(lambda s: s.wait_tasks([], timeout=-1)), "timeout"),
    ("cancel_task(5)", _aio(lambda s: s.cancel_task(5)), "task"),
    ("cancel_tasks('uid')", _aio(lambda s: s.cancel_tasks("task.1")), "tasks"),
    ("start_service(name=5)", _aio(lambda s: s.start_service(5, ["x"])), "name"),
    ("start_service(command='x')", _aio(lambda s: s.start_service("a", "x")), "command"),
    ("subscribe(5)", lambda: _session().subscribe(5), "callable"),
    ("dashboard(plots=['nope'])", lambda: _closing(lambda s: s.dashboard(plots=["nope"])),
     "plot"),
    # tasks
    ("ComputeTask()", lambda: ComputeTask(), "function"),
    ("ComputeTask(function=5)", lambda: ComputeTask(function=5), "function"),
    ("ComputeTask(both)", lambda: ComputeTask(function=_f, executable="/bin/true"),
     "executable"),
    ("ComputeTask(args=5)", lambda: ComputeTask(function=_f, args=5), "args"),
    ("ComputeTask(kwargs=[])", lambda: ComputeTask(function=_f, kwargs=[]), "kwargs"),
    ("ComputeTask(arguments='-f')",
     lambda: ComputeTask(executable="/bin/ls", arguments="-f"), "arguments"),
    ("ComputeTask(uid='')", lambda: ComputeTask(function=_f, uid=""), "uid"),
    ("ComputeTask(backend=5)", lambda: ComputeTask(function=_f, backend=5), "backend"),
    ("ComputeTask(tbsk=5)",
     lambda: ComputeTask(function=_f, task_backend_specific_kwargs=5),
     "task_backend_specific_kwargs"),
    ("AITask()", lambda: AITask(), "prompt"),
    ("AITask(prompt=5)", lambda: AITask(prompt=5), "prompt"),
    ("AITask(temperature=9)", lambda: AITask(prompt="a", temperature=9), "temperature"),
    ("AITask(top_p=0)", lambda: AITask(prompt="a", top_p=0), "top_p"),
    ("AITask(max_tokens=0)", lambda: AITask(prompt="a", max_tokens=0), "max_tokens"),
    ("AITask(top_k=0)", lambda: AITask(prompt="a", top_k=0), "top_k"),
    ("AITask(stop_sequences='x')", lambda: AITask(prompt="a", stop_sequences="x"),
     "stop_sequences"),
    ("AITask(model=5)", lambda: AITask(prompt="a", model=5), "model"),
    ("BaseTask.from_dict(5)", lambda: BaseTask.from_dict(5), "dict"),
    ("BaseTask.from_dict({})", lambda: BaseTask.from_dict({}), "function"),
    # task options, checked at submit
    ("tbsk cwdd", _aio(lambda s: s.submit_tasks([ComputeTask(
        executable="/bin/true", task_backend_specific_kwargs={"cwdd": "/"})])), "cwdd"),
    ("tbsk timeout on a function", _aio(lambda s: s.submit_tasks([ComputeTask(
        function=_f, task_backend_specific_kwargs={"timeout": 1})])), "timeout"),
    ("tbsk shell='yes'", _aio(lambda s: s.submit_tasks([ComputeTask(
        executable="/bin/true", task_backend_specific_kwargs={"shell": "yes"})])), "shell"),
    # backends
    ("Concurrent(executor=5)", lambda: ConcurrentExecutionBackend(executor=5), "executor"),
    ("Concurrent(max_workers=0)", lambda: ConcurrentExecutionBackend(max_workers=0),
     "max_workers"),
    ("Concurrent(name='')", lambda: ConcurrentExecutionBackend(name=""), "name"),
    ("Dask(resources=5)", lambda: DaskExecutionBackend(resources=5), "resources"),
    ("Dask(resources={'bogus': 1})", lambda: DaskExecutionBackend(resources={"bogus": 1}),
     "bogus"),
    ("Dask(cluster=5)", lambda: DaskExecutionBackend(cluster=5), "cluster"),
    ("Dragon(num_workers=0)", lambda: DragonExecutionBackendV3(num_workers=0),
     "num_workers"),
    ("Dragon(batch_kwargs=5)", lambda: DragonExecutionBackendV3(batch_kwargs=5),
     "batch_kwargs"),
    ("Vllm(port=-1)", lambda: VllmInferenceBackend(port=-1, endpoint=None,
                                                   model_name="m"), "port"),
    ("Vllm(endpoint=5)", lambda: VllmInferenceBackend(endpoint=5), "endpoint"),
    ("register_callback(5)", lambda: ConcurrentExecutionBackend().register_callback(5),
     "callback"),
    # registry
    ("get_backend('nope')", lambda: get_backend("nope"), "nope"),
    ("get_backend('dask', bogus=1)", lambda: get_backend("dask", bogus=1), "bogus"),
    ("get_backend(5)", lambda: get_backend(5), "5"),
    ("backend_class([])", lambda: backend_class([]), "backend"),
    # observe
    ("observe.load(missing)", lambda: observe.load("/nonexistent/j.jsonl"), "journal"),
    ("observe.load(5)", lambda: observe.load(5), "journal"),
    ("attach_journal(5)", lambda: observe.attach_journal(5), "Session"),
    ("Metrics(bin_width=0)", lambda: observe.Metrics(bin_width=0), "bin_width"),
    ("Metrics(max_bins=0)", lambda: observe.Metrics(max_bins=0), "max_bins"),
]


def _dashboard_rows():
    pytest.importorskip("bokeh")
    from rhapsody_lab.dashboard import report
    from rhapsody_lab.dashboard.components import checked_plots, metrics_of
    return [
        ("write_report(5)", lambda: report.write_report(5, "/tmp/x.html"), "source"),
        ("write_report(out in no folder)", lambda: report.write_report(
            observe.Metrics(live=False), "/nonexistent/r.html"), "folder"),
        ("write_report(title=5)", lambda: report.write_report(
            observe.Metrics(live=False), "/tmp/r.html", title=5), "title"),
        ("checked_plots(['x'])", lambda: checked_plots(["x"], 1), "plot"),
        ("checked_plots(interval=0)", lambda: checked_plots([], 0), "interval"),
        ("metrics_of(5)", lambda: metrics_of(5), "Session"),
    ]


MAGIC_ROWS = [
    ('%rhapsody start --name "abc', "quote"),
    ("%rhapsody start --workers 0", "--workers"),
    ("%rhapsody start --backend gpu", "backend"),
    ("%rhapsody start --var 1x", "--var"),
    ("%rhapsody start --inference ftp://x", "--inference"),
    ("%rhapsody status --attach 5", "Session"),
    ("%rhapsody map", "required"),
    ("%rhapsody map len 5", "iterable"),
    ("%rhapsody map 5 range(2)", "callable"),
    ("%rhapsody map len range(2) -n 1x", "NAME"),
    ("%rhapsody wait --timeout -1", "--timeout"),
    ("%rhapsody wait 5", "task"),
    ("%rhapsody cancel 5", "task"),
    ("%rhapsody task t", "cell magic"),
    ("%rhapsody ai", "prompt"),
    ("%rhapsody ai hi --max-tokens x", "--max-tokens"),
    ("%rhapsody bogus", "unknown verb"),
]

RESULTS: dict[str, bool] = {}


def _check(name, call, word):
    with pytest.raises(Exception) as err:
        call()
    clear = isinstance(err.value, RhapsodyError) and word.lower() in str(err.value).lower()
    RESULTS[name] = clear
    assert clear, f"{name}: {type(err.value).__name__}: {err.value}"


@pytest.mark.parametrize("name, call, word", ROWS, ids=[r[0] for r in ROWS])
def test_public_call_gives_a_clear_error(name, call, word):
    _check(name, call, word)


def test_dashboard_entry_points_give_clear_errors():
    for name, call, word in _dashboard_rows():
        _check(name, call, word)


@pytest.fixture
def ip():
    pytest.importorskip("IPython")
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    before = set(shell.user_ns)
    shell.run_line_magic("load_ext", "rhapsody_lab.notebook")
    yield shell
    shell.run_cell("%rhapsody stop")
    shell.run_line_magic("unload_ext", "rhapsody_lab.notebook")
    for name in set(shell.user_ns) - before:
        shell.user_ns.pop(name, None)


def test_every_magic_verb_gives_a_clear_error(ip, capsys):
    for line, word in MAGIC_ROWS:
        if any(v in line for v in ("map ", "wait ", "cancel ", " ai")) and (
                "session" not in ip.user_ns or ip.user_ns["session"].closed):
            ip.run_cell("%rhapsody start --workers 1")
            capsys.readouterr()
        result = ip.run_cell(line)
        cap = capsys.readouterr()
        clear = result.error_in_exec is None and "usage: %" in cap.err and \
            word.lower() in cap.err.lower() and "Traceback" not in cap.out + cap.err
        RESULTS[line] = clear
        assert clear, (line, cap.out, cap.err, result.error_in_exec)


def test_survey_count(capsys):
    """Run last in this module: the figure of the survey."""
    total = len(ROWS) + len(MAGIC_ROWS) + 6
    if len(RESULTS) < total:
        pytest.skip("the survey rows did not all run in this session")
    clear = sum(RESULTS.values())
    with capsys.disabled():
        print(f"\nbad-input survey: tried {len(RESULTS)}, clear error {clear}")
    assert clear == len(RESULTS)
