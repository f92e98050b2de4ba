"""Tasks: dict-like, attribute-like, awaitable descriptions of work, updated in place.

A task is a ``dict`` (backends read and write fields without conversion) that also allows
``task.field`` access. Once submitted it is bound to an ``asyncio.Future``; ``await task``
returns the task, or raises what the future raises when the task failed.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Generator, Iterable
from typing import Any

from .errors import TaskValidationError
from .states import NEW, TERMINAL_STATES

__all__ = ["AITask", "BaseTask", "ComputeTask"]

_uid_counter = itertools.count(1)

#: Result fields every task carries, set to None until a backend fills them.
_RESULT_FIELDS = ("state", "stdout", "stderr", "exit_code", "return_value", "response",
                  "exception")


def _next_uid() -> str:
    uid = "task.%06d" % next(_uid_counter)  # noqa: UP031 (%-format is the fastest here)
    hash(uid)  # cached in the string: submit's duplicate check and the backends reuse it
    return uid


class BaseTask(dict):
    """Common fields and behaviour of every task (see ``ComputeTask`` and ``AITask``)."""

    __slots__ = ("_future",)
    kind: str = "task"

    def __init__(self, uid: str | None = None, backend: str | None = None, **fields: Any):
        super().__init__()
        self["uid"] = _next_uid() if uid is None else uid
        self["backend"] = backend
        for name in _RESULT_FIELDS:
            self[name] = None
        self["state"] = NEW
        self.update(fields)
        object.__setattr__(self, "_future", None)
        self.validate()

    # -- attribute access --------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__!s} has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    # -- identity ----------------------------------------------------------------------
    def __hash__(self) -> int:  # type: ignore[override]
        return hash(self["uid"])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BaseTask):
            return self["uid"] == other["uid"]
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    # -- awaiting ----------------------------------------------------------------------
    def bind_future(self, future: Any) -> None:
        """Bind the future that resolves when this task reaches a terminal state."""
        object.__setattr__(self, "_future", future)

    @property
    def future(self) -> Any:
        """The bound ``asyncio.Future`` (None before submission)."""
        return self._future

    def __await__(self) -> Generator[Any, None, BaseTask]:
        fut = self._future
        if fut is None:
            raise RuntimeError(
                f"Task {self['uid']} has no bound future: submit it with "
                "`await session.submit_tasks([task])` before awaiting it.")
        yield from fut.__await__()
        return self

    def done(self) -> bool:
        """True once the task reached DONE, FAILED or CANCELED."""
        return self["state"] in TERMINAL_STATES

    # -- serialisation -----------------------------------------------------------------
    def __reduce__(self):  # type: ignore[override]
        return (_rebuild, (type(self), dict(self)))

    def to_dict(self) -> dict[str, Any]:
        """A plain ``dict`` copy of every field."""
        return dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaseTask:
        """Build a ``ComputeTask`` or ``AITask`` from a dict, chosen by its fields."""
        if not isinstance(data, dict):
            raise TaskValidationError(None, f"from_dict expects a dict, got {type(data).__name__}")
        data = dict(data)
        results = {k: data.pop(k) for k in _RESULT_FIELDS if k in data}
        if cls is BaseTask:
            if data.get("prompt") is not None:
                cls = AITask
            elif data.get("function") is not None or data.get("executable") is not None:
                cls = ComputeTask
            else:
                raise TaskValidationError(
                    data.get("uid"), "cannot tell the task type: give 'function' or "
                    "'executable' (ComputeTask) or 'prompt' (AITask)")
        task = cls(**data)
        task.update({k: v for k, v in results.items() if v is not None})
        return task

    def validate(self) -> None:
        """Check every field; raise ``TaskValidationError`` naming the field and the fix."""
        uid = self.get("uid")
        if not isinstance(uid, str) or not uid:
            raise TaskValidationError(None, f"uid must be a non-empty string, got {uid!r}",
                                      field="uid")
        backend = self.get("backend")
        if backend is not None and (not isinstance(backend, str) or not backend):
            raise TaskValidationError(
                uid, f"backend must be a backend's name (a string), got {backend!r}; "
                "pass `backend=my_backend.name`", field="backend")
        tbsk = self.get("task_backend_specific_kwargs")
        if tbsk is not None and not isinstance(tbsk, dict):
            raise TaskValidationError(
                uid, "task_backend_specific_kwargs must be a dict, got "
                f"{type(tbsk).__name__}", field="task_backend_specific_kwargs")

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.items() if v is not None
                          and v != () and v != [] and v != {})
        return f"{type(self).__name__}({shown})"


def _rebuild(cls: type[BaseTask], data: dict[str, Any]) -> BaseTask:
    task = cls.__new__(cls)
    dict.update(task, data)
    object.__setattr__(task, "_future", None)
    return task


class ComputeTask(BaseTask):
    """A Python callable (sync or ``async def``) or an executable to run.

    Exactly one of ``function`` / ``executable``; ``args``/``kwargs`` go to the function,
    ``arguments`` to the executable; execution options (``cwd``, ``env``, ``shell``,
    ``timeout``, resources) go in ``task_backend_specific_kwargs``.
    """

    __slots__ = ()

    def __init__(self, function: Callable[..., Any] | None = None,
                 executable: str | None = None, args: Iterable[Any] = (),
                 kwargs: dict[str, Any] | None = None, arguments: list[str] | None = None,
                 backend: str | None = None, uid: str | None = None,
                 task_backend_specific_kwargs: dict[str, Any] | None = None, **extra: Any):
        # The same fields, in the same order, as BaseTask.__init__ would give, built from a
        # template: a notebook may build 100,000 of these in one cell.
        dict.__init__(self, _COMPUTE_TEMPLATE)
        self["uid"] = _next_uid() if uid is None else uid
        self["backend"] = backend
        self["function"] = function
        self["executable"] = executable
        self["args"] = tuple(args) if args.__class__ is list else args
        self["kwargs"] = {} if kwargs is None else kwargs
        self["arguments"] = [] if arguments is None else arguments
        self["task_backend_specific_kwargs"] = task_backend_specific_kwargs
        if extra:
            dict.update(self, extra)
        object.__setattr__(self, "_future", None)
        if extra or backend is not None or task_backend_specific_kwargs is not None or \
                executable is not None or function is None or args.__class__ is not tuple \
                or self["kwargs"].__class__ is not dict or uid is not None \
                or not callable(function):
            self.validate()  # the common case (a callable, defaults) needs no more checks

    @property
    def kind(self) -> str:  # type: ignore[override]
        """``"function"`` or ``"executable"``."""
        return "function" if self["function"] is not None else "executable"

    def validate(self) -> None:
        super().validate()
        uid = self["uid"]
        fn, exe = self.get("function"), self.get("executable")
        if fn is None and exe is None:
            raise TaskValidationError(
                uid, "ComputeTask needs either function=<callable> or executable=<path>",
                field="function")
        if fn is not None and exe is not None:
            raise TaskValidationError(
                uid, "ComputeTask takes function= or executable=, not both; make two tasks",
                field="executable")
        if fn is not None:
            if not callable(fn):
                raise TaskValidationError(
                    uid, f"function must be callable, got {type(fn).__name__} {fn!r}",
                    field="function")
            if not isinstance(self.get("args"), tuple | list):
                raise TaskValidationError(
                    uid, f"args must be a tuple or list, got {type(self.get('args')).__name__}"
                    "; write args=(x,) for a single argument", field="args")
            if not isinstance(self.get("kwargs"), dict):
                raise TaskValidationError(
                    uid, f"kwargs must be a dict, got {type(self.get('kwargs')).__name__}",
                    field="kwargs")
        else:
            if not isinstance(exe, str) or not exe:
                raise TaskValidationError(
                    uid, f"executable must be a non-empty string path, got {exe!r}",
                    field="executable")
            arguments = self.get("arguments")
            if not isinstance(arguments, list | tuple):
                raise TaskValidationError(
                    uid, f"arguments must be a list of strings, got "
                    f"{type(arguments).__name__}; write arguments=['-f']", field="arguments")
            for i, a in enumerate(arguments):
                if not isinstance(a, str | int | float):
                    raise TaskValidationError(
                        uid, f"arguments[{i}] must be a string, got {type(a).__name__}",
                        field="arguments")


_COMPUTE_TEMPLATE = dict.fromkeys(("uid", "backend", *_RESULT_FIELDS, "function",
                                   "executable", "args", "kwargs", "arguments",
                                   "task_backend_specific_kwargs"))
_COMPUTE_TEMPLATE["state"] = NEW


def complete_plain_task(task: dict) -> dict:
    """Give a plain dict handed straight to a backend (as RADICAL AsyncFlow does) the
    fields a task has, in place: the caller keeps reading its results from that dict."""
    for name, value in _COMPUTE_TEMPLATE.items():
        if task.get(name) is None and name != "backend":
            task[name] = value
    if task["uid"] is None:
        task["uid"] = _next_uid()
    if task["args"] is None:
        task["args"] = ()
    if task["kwargs"] is None:
        task["kwargs"] = {}
    if task["arguments"] is None:
        task["arguments"] = []
    return task


class AITask(BaseTask):
    """An inference request: ``prompt`` (a str, or a list of str giving a list response)."""

    __slots__ = ()
    kind = "ai"  # type: ignore[assignment]

    def __init__(self, prompt: str | list[str] | None = None, backend: str | None = None,
                 model: str | None = None, system_prompt: str | None = None,
                 temperature: float | None = None, max_tokens: int | None = None,
                 top_p: float | None = None, top_k: int | None = None,
                 stop_sequences: list[str] | None = None, uid: str | None = None,
                 **extra: Any):
        super().__init__(
            uid=uid, backend=backend, prompt=prompt, model=model,
            system_prompt=system_prompt, temperature=temperature, max_tokens=max_tokens,
            top_p=top_p, top_k=top_k, stop_sequences=stop_sequences, **extra)

    def validate(self) -> None:
        super().validate()
        uid = self["uid"]
        prompt = self.get("prompt")
        if prompt is None:
            raise TaskValidationError(uid, "AITask needs a prompt: AITask(prompt='your "
                                      "question') (or a list of prompts)", field="prompt")
        if isinstance(prompt, str):
            if not prompt:
                raise TaskValidationError(uid, "prompt is empty; give the text to send",
                                          field="prompt")
        elif isinstance(prompt, list | tuple):
            if not prompt:
                raise TaskValidationError(uid, "prompt list is empty", field="prompt")
            for i, p in enumerate(prompt):
                if not isinstance(p, str) or not p:
                    raise TaskValidationError(
                        uid, f"prompt[{i}] must be a non-empty string, got {p!r}",
                        field="prompt")
        else:
            raise TaskValidationError(
                uid, f"prompt must be a string or a list of strings, got "
                f"{type(prompt).__name__}", field="prompt")
        for name in ("model", "system_prompt", "inference_endpoint"):
            v = self.get(name)
            if v is not None and not isinstance(v, str):
                raise TaskValidationError(uid, f"{name} must be a string, got {v!r}",
                                          field=name)
        _check_number(uid, "temperature", self.get("temperature"), 0.0, 2.0)
        _check_number(uid, "top_p", self.get("top_p"), 0.0, 1.0, low_open=True)
        _check_int(uid, "max_tokens", self.get("max_tokens"), 1)
        top_k = self.get("top_k")
        if top_k is not None and top_k != -1:
            _check_int(uid, "top_k", top_k, 1, hint=" (or -1 for no limit)")
        stops = self.get("stop_sequences")
        if stops is not None:
            if isinstance(stops, str) or not isinstance(stops, list | tuple) or not all(
                    isinstance(s, str) and s for s in stops):
                raise TaskValidationError(
                    uid, f"stop_sequences must be a list of non-empty strings, got {stops!r};"
                    " write stop_sequences=['\\n\\n']", field="stop_sequences")


def _check_number(uid: str, name: str, value: Any, low: float, high: float,
                  low_open: bool = False) -> None:
    if value is None:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise TaskValidationError(
            uid, f"{name} must be a number in {bracket}{low}, {high}], got {value!r}",
            field=name)


def _check_int(uid: str, name: str, value: Any, low: int, hint: str = "") -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise TaskValidationError(
            uid, f"{name} must be an integer >= {low}{hint}, got {value!r}", field=name)
