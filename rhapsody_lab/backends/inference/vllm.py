"""vLLM inference backend: AITasks sent to an OpenAI-compatible server, batched.

The backend either attaches to a running server (``endpoint="http://host:port/v1"``) or
launches vLLM's own OpenAI server as a managed ``Service`` and waits until it is ready.

Dispatch: ``submit_tasks`` validates, records the tasks QUEUED and returns. Tasks collect
in a batch that is released when it holds ``max_batch_size`` tasks or ``max_batch_wait_ms``
after its first task arrived, whichever comes first. Released requests go to a fixed pool of
``max_concurrency`` sender coroutines sharing one aiohttp client (no asyncio task per AI
task); a sender's index is the task's slot. A list prompt is one request per item; its
``response`` is the list of answers in order.

Faults: a connection error, a timeout or an HTTP 5xx fails that task with ``BackendError``
naming the endpoint; an HTTP 4xx fails it with ``TaskExecutionError`` carrying the server's
message. If a managed server exits, every pending task fails with ``BackendError`` (exit
code and last log lines), the backend becomes FAILED and nothing is restarted; other
backends of the session are untouched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Sequence

import aiohttp

from ...api.backend import BaseBackend
from ...api.errors import BackendError, SessionError, TaskExecutionError, TaskValidationError
from ...api.states import CANCELED, DONE, FAILED, RUNNING
from ...api.task import AITask, BaseTask
from ...services import Service
from ._config import int_field, load_config
from ._openai import answer_of, error_message, request_for
from ._server import ManagedServer, default_vllm_python, vllm_home

__all__ = ["VllmInferenceBackend", "default_vllm_python", "vllm_home"]

log = logging.getLogger(__name__)

_SAMPLING = ("temperature", "max_tokens", "top_p", "top_k", "stop_sequences",
             "system_prompt", "model")


class VllmInferenceBackend(ManagedServer, BaseBackend):
    """Runs ``AITask``s on a vLLM (or any OpenAI-compatible) server.

    Attach: ``VllmInferenceBackend(endpoint="http://127.0.0.1:8000/v1")`` (``model_name``
    defaults to the first model the server lists). Managed: ``VllmInferenceBackend(
    model_name="/path/or/hf-id", port=8001)`` launches
    ``python -m vllm.entrypoints.openai.api_server`` with the vLLM python found in
    ``python=``, the config file, $RHAPSODY_VLLM_PYTHON or ~/.cache/rhapsody_lab/vllm-venv.

    ``config_file`` (YAML or JSON) may set: ``model`` (what the server loads; then
    ``model_name`` is the name clients use), ``served_model_name``, ``python``, ``host``,
    ``port``, ``args`` (extra server arguments), ``env``, ``endpoint``, ``api``,
    ``max_concurrency``, ``startup_timeout``, ``request_timeout``, ``log_file``.
    Constructor keywords win over the file.
    """

    task_kinds = frozenset({"ai"})

    def __init__(self, config_file: str | None = None, model_name: str | None = None,
                 num_nodes: int = 1, num_gpus: int = 1, tp_size: int = 1, port: int = 8001,
                 max_batch_size: int = 1024, max_batch_wait_ms: float = 500,
                 endpoint: str | None = None, name: str = "vllm", *,
                 max_concurrency: int | None = None, api: str | None = None,
                 python: str | None = None, host: str | None = None,
                 server_args: Sequence[str] | None = None,
                 server_command: Sequence[str] | None = None,
                 env: dict[str, str] | None = None, served_model_name: str | None = None,
                 startup_timeout: float | None = None, request_timeout: float | None = None,
                 log_file: str | None = None, placement: str = "auto"):
        super().__init__(name)
        cfg = load_config(config_file) if config_file is not None else {}
        self.config_file = config_file
        self.config = cfg
        int_field("num_nodes", num_nodes, 1)
        int_field("num_gpus", num_gpus, 0)
        int_field("tp_size", tp_size, 1)
        port = cfg.get("port", port) if port == 8001 else port
        int_field("port", port, 0, 65535)
        int_field("max_batch_size", max_batch_size, 1)
        if isinstance(max_batch_wait_ms, bool) or not isinstance(
                max_batch_wait_ms, int | float) or not max_batch_wait_ms >= 0:
            raise SessionError(f"max_batch_wait_ms must be a number >= 0, got "
                               f"{max_batch_wait_ms!r}")
        endpoint = endpoint if endpoint is not None else cfg.get("endpoint")
        if endpoint is not None:
            if not isinstance(endpoint, str) or not endpoint.startswith(("http://",
                                                                         "https://")):
                raise SessionError(f"endpoint must be an http(s) URL such as "
                                   f"'http://127.0.0.1:8000/v1', got {endpoint!r}")
            endpoint = endpoint.rstrip("/")
        max_concurrency = max_concurrency if max_concurrency is not None else cfg.get(
            "max_concurrency", 128)
        int_field("max_concurrency", max_concurrency, 1)
        api = api or cfg.get("api", "chat")
        if api not in ("chat", "completions"):
            raise SessionError(f"api must be 'chat' or 'completions', got {api!r}")
        for field, v in (("startup_timeout", startup_timeout),
                         ("request_timeout", request_timeout)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                                  or v <= 0):
                raise SessionError(f"{field} must be a number of seconds > 0, got {v!r}")
        if model_name is not None and (not isinstance(model_name, str) or not model_name):
            raise SessionError(f"model_name must be a non-empty string, got {model_name!r}")
        load = cfg.get("model")
        if endpoint is None and server_command is None and not (model_name or load):
            raise SessionError("model_name is required to launch a vLLM server (a local "
                               "model folder or a Hugging Face id), or pass "
                               "endpoint='http://host:port/v1' to attach to a running one")
        if endpoint is None and num_nodes > 1:
            raise SessionError("num_nodes > 1: multi-node vLLM placement is not implemented "
                               "yet; start the server yourself and pass endpoint=")
        self.model_name = model_name
        self.num_nodes, self.num_gpus, self.tp_size = num_nodes, num_gpus, tp_size
        self.max_batch_size = max_batch_size
        self.max_batch_wait_ms = float(max_batch_wait_ms)
        self.max_concurrency = max_concurrency
        self.api = api
        self.host = host or cfg.get("host", "127.0.0.1")
        self.port = port
        self.python = python or cfg.get("python")
        args = server_args if server_args is not None else cfg.get("args")
        if isinstance(args, str):
            args = args.split()
        self.server_args = list(args) if args is not None else None
        self.server_command = list(server_command) if server_command is not None else None
        self.env = {**(cfg.get("env") or {}), **(env or {})}
        self.load_model = load or model_name
        self.served_model_name = served_model_name or cfg.get("served_model_name") or (
            model_name if load else None)
        self.startup_timeout = float(startup_timeout or cfg.get("startup_timeout", 900))
        self.request_timeout = float(request_timeout or cfg.get("request_timeout", 600))
        self.log_file = log_file or cfg.get("log_file")
        self.placement = placement
        self._attach = endpoint is not None
        self._endpoint = endpoint
        self.service: Service | None = None
        self._http: aiohttp.ClientSession | None = None
        self._senders: list[asyncio.Task] = []
        self._queue: asyncio.Queue | None = None
        self._batch: deque = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._parts: dict[str, list] = {}  # uid -> [answers, left, usage]
        self._failure: BackendError | None = None
        self._wake_pending = False
        self.batches_sent = 0

    # -- information -------------------------------------------------------------------
    @property
    def endpoint(self) -> str | None:
        """``http://host:port/v1`` once known."""
        return self._endpoint

    @property
    def managed(self) -> bool:
        """True if this backend launched (and will stop) the server."""
        return not self._attach

    def capacity(self) -> int:
        return self.max_concurrency

    def __repr__(self) -> str:
        mode = "attached" if self._attach else "managed"
        return (f"<{type(self).__name__} {self.name} {self._backend_state} {mode} "
                f"endpoint={self._endpoint} model={self.served_model_name}>")

    # -- life cycle --------------------------------------------------------------------
    async def _start(self) -> None:
        if not self._attach:
            await self._launch()
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        conn = aiohttp.TCPConnector(limit=self.max_concurrency,
                                    limit_per_host=self.max_concurrency)
        self._http = aiohttp.ClientSession(connector=conn, timeout=timeout)
        try:
            await self._check_models()
        except BaseException:
            await self._stop()
            raise
        self._queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._senders = [loop.create_task(self._sender(i), name=f"rhapsody-{self.name}-{i}")
                         for i in range(self.max_concurrency)]

    async def _check_models(self) -> None:
        url = f"{self._endpoint}/models"
        try:
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
                body = await r.read()
                if r.status != 200:
                    raise BackendError(self.name, f"endpoint {self._endpoint} answered "
                                       f"HTTP {r.status} to GET /models: {body[:300]!r}")
                data = json.loads(body)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            raise BackendError(self.name, f"endpoint {self._endpoint} is unreachable or "
                               f"not OpenAI-compatible: {type(exc).__name__}: {exc}") from exc
        served = [m.get("id") for m in data.get("data", []) if isinstance(m, dict)]
        self.served_models = served
        want = self.served_model_name or self.model_name
        if want is None:
            if not served:
                raise BackendError(self.name, f"endpoint {self._endpoint} serves no model")
            self.served_model_name = served[0]
        elif served and want not in served:
            raise BackendError(self.name, f"model {want!r} is not served at "
                               f"{self._endpoint}; it serves {served}; pass model_name= one "
                               "of those")
        else:
            self.served_model_name = want

    async def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._batch.clear()
        for t in self._senders:
            t.cancel()
        if self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)
        self._senders = []
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self.service is not None:
            await self.service.stop()

    # -- submission --------------------------------------------------------------------
    def check_task(self, task: dict) -> None:
        if task.get("prompt") is None:
            raise TaskValidationError(task.get("uid"), f"backend '{self.name}' runs AITasks "
                                      "(with a prompt) only", field="prompt")
        if task.get("task_backend_specific_kwargs"):
            from .._options import check_keys
            check_keys(task, self.name, ())  # an inference request takes none
        if isinstance(task, BaseTask):
            task.validate()  # ranges of temperature, top_p, top_k, max_tokens, stops
        else:
            fields = {k: task[k] for k in ("prompt", "uid", *_SAMPLING) if k in task}
            AITask(**fields, backend=self.name)  # a dict handed straight to this backend

    async def submit_tasks(self, tasks: Sequence[dict]) -> None:
        self._ensure_running()
        for task in tasks:  # everything is checked before anything is queued or sent
            self.check_task(task)
        self._accept(tasks)
        batch = self._batch
        batch.extend(tasks)
        if len(batch) >= self.max_batch_size:
            self._release(full_only=True)
        elif self._timer is None and batch:
            self._timer = self._loop.call_later(self.max_batch_wait_ms / 1000.0,
                                                self._release)

    def _release(self, full_only: bool = False) -> None:
        """Send the waiting tasks in batches of ``max_batch_size`` (only full ones if asked)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, put, live, size = self._batch, self._queue.put_nowait, self._live, \
            self.max_batch_size
        while batch and (not full_only or len(batch) >= size):
            self.batches_sent += 1
            for _ in range(min(len(batch), size)):
                task = batch.popleft()
                if task["uid"] not in live:
                    continue  # canceled while it waited
                prompt = task["prompt"]
                if isinstance(prompt, str):
                    put((task, prompt, -1))
                else:
                    self._parts[task["uid"]] = [[None] * len(prompt), len(prompt),
                                                {"prompt_tokens": 0, "completion_tokens": 0}]
                    for i, p in enumerate(prompt):
                        put((task, p, i))
        if batch:  # a partial batch: it waits for its window
            self._timer = self._loop.call_later(self.max_batch_wait_ms / 1000.0,
                                                self._release)

    async def cancel_task(self, uid: str) -> bool:
        task = self._live.get(uid)
        if task is None:
            return False
        self._parts.pop(uid, None)
        self._finish(task, CANCELED, time.time(), reason="canceled by request")
        self._wake()
        return True  # a request already sent is left to finish; its answer is dropped

    # -- senders -----------------------------------------------------------------------
    async def _sender(self, slot: int) -> None:
        get = self._queue.get
        live = self._live
        while True:
            task, prompt, index = await get()
            uid = task["uid"]
            if uid not in live:
                continue
            self.move(task, RUNNING, time.time(), slot)  # once: an AITask's prompts share it
            try:
                text, usage = await self._request(task, prompt)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if uid in live:
                    self._parts.pop(uid, None)
                    self._fail(task, exc, time.time(), slot)
                    self._wake()
                continue
            if uid not in live:
                continue  # canceled (or failed) while the request ran
            if index < 0:
                task["response"] = text
                task["return_value"] = text
                task["usage"] = usage
                task["exit_code"] = 0
                self._finish(task, DONE, time.time(), slot)
                self._wake()
                continue
            parts = self._parts.get(uid)
            if parts is None:
                continue
            parts[0][index] = text
            parts[1] -= 1
            for k in ("prompt_tokens", "completion_tokens"):
                parts[2][k] += usage.get(k) or 0
            if parts[1] == 0:
                del self._parts[uid]
                task["response"] = parts[0]
                task["return_value"] = parts[0]
                task["usage"] = parts[2]
                task["exit_code"] = 0
                self._finish(task, DONE, time.time(), slot)
                self._wake()

    async def _request(self, task: dict, prompt: str) -> tuple[str, dict]:
        if self._failure is not None:
            raise self._failure
        url, body = request_for(self.api, self._endpoint, self.served_model_name, task,
                                prompt)
        try:
            async with self._http.post(url, json=body) as r:
                raw = await r.read()
                status = r.status
        except asyncio.TimeoutError as exc:
            raise BackendError(self.name, f"no answer from endpoint {self._endpoint} within "
                               f"request_timeout={self.request_timeout:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            svc = self.service
            if svc is not None and self._failure is None:
                for _ in range(10):  # the socket closes a moment before the exit is seen
                    if not svc.is_alive():
                        self._service_exited(svc)
                        break
                    await asyncio.sleep(0.05)
            if self._failure is not None:
                raise self._failure from exc
            raise BackendError(self.name, f"endpoint {self._endpoint} unreachable or "
                               f"connection lost: {type(exc).__name__}: {exc}") from exc
        if status != 200:
            msg = error_message(raw)
            if status >= 500:
                raise BackendError(self.name, f"endpoint {self._endpoint} answered HTTP "
                                   f"{status}: {msg}")
            raise TaskExecutionError(task["uid"], f"endpoint {self._endpoint} refused the "
                                     f"request (HTTP {status}): {msg}")
        try:
            return answer_of(self.api, raw)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BackendError(self.name, f"endpoint {self._endpoint} sent an answer that "
                               f"is not OpenAI-compatible: {raw[:200]!r}") from exc

    # -- completion --------------------------------------------------------------------
    def _fail(self, task: dict, exc: BaseException, now: float, slot: object = None) -> None:
        task["exception"] = exc
        task["stderr"] = str(exc)
        task["exit_code"] = 1
        self._finish(task, FAILED, now, slot)

    def _wake(self) -> None:
        """Let the session deliver events: once per loop iteration, not per completion."""
        if self._wake_session is not None and not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon(self._woken)

    def _woken(self) -> None:
        self._wake_pending = False
        if self._wake_session is not None:
            self._wake_session()
