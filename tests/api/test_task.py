"""Tasks: construction, validation errors naming the field, dict/attribute access, pickling."""

from __future__ import annotations

import pickle

import pytest

from rhapsody_lab import BaseTask, TaskValidationError
from rhapsody_lab.api import AITask, ComputeTask


def add(a, b=0):
    return a + b


def test_dict_and_attribute_access_are_the_same_storage():
    t = ComputeTask(function=add, args=(1,), kwargs={"b": 2})
    assert t.state == t["state"] == "NEW"
    t.custom = 5
    assert t["custom"] == 5
    t["other"] = 6
    assert t.other == 6
    assert t.uid.startswith("task.") and len(t.uid) == len("task.000001")
    with pytest.raises(AttributeError):
        _ = t.no_such_field


def test_auto_uids_increase():
    a, b = ComputeTask(function=add), ComputeTask(function=add)
    assert int(b.uid.split(".")[1]) == int(a.uid.split(".")[1]) + 1


def test_hash_and_equality_by_uid():
    a = ComputeTask(function=add, uid="x")
    b = ComputeTask(function=add, uid="x")
    c = ComputeTask(function=add, uid="y")
    assert a == b and a != c
    assert len({a, b, c}) == 2


def test_pickle_round_trip_keeps_fields_not_future():
    t = ComputeTask(executable="/bin/echo", arguments=["hi"], uid="p1")
    t.bind_future(object())
    u = pickle.loads(pickle.dumps(t))
    assert isinstance(u, ComputeTask) and u == t and u.arguments == ["hi"]
    assert u.future is None


def test_from_dict_and_to_dict():
    t = BaseTask.from_dict({"executable": "/bin/true", "uid": "d1"})
    assert isinstance(t, ComputeTask) and t.kind == "executable"
    a = BaseTask.from_dict({"prompt": "hi", "model": "m"})
    assert isinstance(a, AITask) and a.kind == "ai"
    assert ComputeTask.from_dict(t.to_dict()) == t
    with pytest.raises(TaskValidationError, match="cannot tell the task type"):
        BaseTask.from_dict({"uid": "z"})


def test_await_before_submit_raises_runtime_error():
    t = ComputeTask(function=add)

    async def go():
        await t

    import asyncio
    with pytest.raises(RuntimeError, match="no bound future"):
        asyncio.run(go())


def test_repr_is_readable():
    r = repr(ComputeTask(executable="/bin/echo", arguments=["a"], uid="r1"))
    assert r.startswith("ComputeTask(") and "uid='r1'" in r and "'/bin/echo'" in r


@pytest.mark.parametrize("kwargs, field", [
    ({}, "function"),
    ({"function": add, "executable": "/bin/true"}, "executable"),
    ({"function": 3}, "function"),
    ({"function": add, "args": 3}, "args"),
    ({"function": add, "kwargs": [1]}, "kwargs"),
    ({"executable": ""}, "executable"),
    ({"executable": "/bin/true", "arguments": "-f"}, "arguments"),
    ({"executable": "/bin/true", "arguments": [object()]}, "arguments"),
    ({"function": add, "uid": ""}, "uid"),
    ({"function": add, "backend": 5}, "backend"),
    ({"function": add, "task_backend_specific_kwargs": [1]}, "task_backend_specific_kwargs"),
])
def test_compute_task_bad_input_names_the_field(kwargs, field):
    with pytest.raises(TaskValidationError) as err:
        ComputeTask(**kwargs)
    assert err.value.field == field
    assert field.split("_")[0] in str(err.value)


@pytest.mark.parametrize("kwargs, field", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": ["ok", 3]}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": "p", "temperature": -0.1}, "temperature"),
    ({"prompt": "p", "temperature": 2.5}, "temperature"),
    ({"prompt": "p", "temperature": float("nan")}, "temperature"),
    ({"prompt": "p", "top_p": 0}, "top_p"),
    ({"prompt": "p", "top_p": 1.2}, "top_p"),
    ({"prompt": "p", "top_k": 0}, "top_k"),
    ({"prompt": "p", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "p", "max_tokens": 2.5}, "max_tokens"),
    ({"prompt": "p", "stop_sequences": "\n"}, "stop_sequences"),
    ({"prompt": "p", "model": 3}, "model"),
])
def test_ai_task_bad_input_names_the_field(kwargs, field):
    with pytest.raises(TaskValidationError) as err:
        AITask(**kwargs)
    assert err.value.field == field


def test_ai_task_accepts_valid_sampling_values():
    t = AITask(prompt=["a", "b"], temperature=0.0, top_p=1.0, top_k=-1, max_tokens=8,
               stop_sequences=["\n\n"], system_prompt="be brief", model="m")
    assert t.kind == "ai" and t.prompt == ["a", "b"]


def test_compute_task_fields_and_order_whatever_the_path():
    """The common case skips re-validation; every path gives the same fields, in order."""
    order = ["uid", "backend", "state", "stdout", "stderr", "exit_code", "return_value",
             "response", "exception", "function", "executable", "args", "kwargs",
             "arguments", "task_backend_specific_kwargs"]
    fast = ComputeTask(function=add)
    named = ComputeTask(function=add, uid="mine", args=[1], kwargs={"b": 2},
                        backend="b1", task_backend_specific_kwargs={"x": 1}, tag="t")
    exe = ComputeTask(executable="/bin/echo", arguments=["hi"])
    assert list(fast) == order and list(exe) == order and list(named) == [*order, "tag"]
    assert fast.state == "NEW" and fast.args == () and fast.kwargs == {} \
        and fast.arguments == [] and fast.future is None
    assert named.args == (1,) and named.uid == "mine" and named.tag == "t"
    assert fast.kwargs is not ComputeTask(function=add).kwargs  # never a shared default
