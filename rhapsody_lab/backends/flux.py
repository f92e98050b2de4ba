"""FluxExecutionBackend: executables, MPI-style jobs and Python functions as Flux jobs.

It attaches to the enclosing Flux instance (``uri=``, else ``$FLUX_URI``) or starts its own
(``flux start --test-size=N``, a managed child ended at shutdown). flux-core is found by
``_flux_env`` (``$RHAPSODY_LAB_FLUX_PREFIX``, the cache ``.ci/setup.d/45-flux.sh`` fills,
``flux`` on PATH). Every Flux call runs on one thread (``_flux_link``): the loop hands it
tasks in batches, it submits them as futures and follows them all through the job-manager
journal; outcomes reach the engine's one drain (``report``), RUNNING at a job's ``start``.
A function task runs as ``python _flux_runner.py`` in its job (cloudpickled in, result
pickled back), so a timeout or a cancel ends it like any process.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from ..api.backend import CANCELED_CLAIM, BaseBackend, record_failure
from ..api.errors import BackendError, SessionError, TaskExecutionError
from ..api.states import FAILED, RUNNING
from . import _flux_outcome as outcome
from ._flux_env import find_install, import_flux, missing_reason
from ._flux_spec import JobShape, SpecBuilder, job_shape

__all__ = ["FluxExecutionBackend"]

_PLAIN_SHAPE = job_shape({"uid": "-"})


class FluxExecutionBackend(BaseBackend):
    """Runs tasks as jobs of a Flux instance (attached to, or started here).

    ``uri``: the instance to attach to (default ``$FLUX_URI``; without either, one is
    started with ``test_size`` brokers). ``prefix``: a flux-core install prefix (default:
    found, see ``_flux_env``). ``start_timeout``: seconds the instance may take to start.
    ``validate``: whether Flux's ingest validator checks each jobspec (default: only on an
    attached instance; the jobspecs built here are valid, and on an instance of our own
    skipping the validator's Python worker leaves its CPU to the jobs). ``max_jobs``: jobs in
    Flux at once (default: 512 or 4 per core, whichever is more); later tasks wait here,
    QUEUED, and are submitted as jobs end.
    """

    drain_budget = 4_000
    drain_seconds = 0.004

    def __init__(self, name: str = "flux", uri: str | None = None, test_size: int = 1,
                 prefix: str | None = None, start_timeout: float = 60.0,
                 validate: bool | None = None, max_jobs: int | None = None):
        super().__init__(name)
        if uri is not None and (not isinstance(uri, str) or "://" not in uri):
            raise SessionError(f"uri must be a Flux URI such as 'local:///tmp/flux-x/local-0',"
                               f" got {uri!r}; omit it to use $FLUX_URI or start an instance")
        if isinstance(test_size, bool) or not isinstance(test_size, int) or test_size < 1:
            raise SessionError(f"test_size must be an integer >= 1 (brokers of the instance "
                               f"started here), got {test_size!r}")
        if prefix is not None and not (isinstance(prefix, str) and os.path.isfile(
                os.path.join(prefix, "bin", "flux"))):
            raise SessionError(f"prefix {prefix!r} is not a flux-core install (no bin/flux); "
                               "pass the --prefix flux-core was installed with")
        if isinstance(start_timeout, bool) or not isinstance(start_timeout, int | float) \
                or start_timeout <= 0:
            raise SessionError(f"start_timeout must be a number of seconds > 0, got "
                               f"{start_timeout!r}")
        if validate is not None and not isinstance(validate, bool):
            raise SessionError(f"validate must be True, False or None, got {validate!r}")
        self._validate = validate
        if max_jobs is not None and (isinstance(max_jobs, bool) or not isinstance(
                max_jobs, int) or max_jobs < 1):
            raise SessionError(f"max_jobs must be an integer >= 1 (jobs in Flux at once), got "
                               f"{max_jobs!r}")
        self._max_jobs = max_jobs
        self._uri = uri
        self._test_size = test_size
        self._prefix = prefix
        self._start_timeout = float(start_timeout)
        self._token = uuid.uuid4().hex
        self.broker: Any = None        # a ManagedBroker when the instance is our own
        self.uri: str | None = None    # the instance's URI once started
        self._link: Any = None
        self._specs: SpecBuilder | None = None
        self._files: str | None = None
        self._shapes: dict[str, JobShape] = {}
        self._exceptions: dict[str, tuple[str, str]] = {}
        self._started: set[str] = set()    # uids whose job started (its finish will come)
        self._canceled: set[str] = set()
        self._path_blob = b""
        self._lost: str | None = None
        self._all_ended = threading.Event()

    # -- life cycle --------------------------------------------------------------------
    @property
    def attached(self) -> bool:
        """Whether the instance is someone else's (attached to), not started here."""
        return self.broker is None

    def capacity(self) -> int:
        link = self._link
        return max(1, link.cores) if link is not None else 1

    async def _start(self) -> None:
        if self._prefix is not None:
            from ._flux_env import FluxInstall
            inst = FluxInstall(self._prefix, os.path.join(self._prefix, "bin", "flux"),
                               os.path.join(self._prefix, "lib"))
        else:
            inst = find_install()
        if inst is None:
            raise BackendError(self.name, missing_reason())
        try:
            flux = await asyncio.to_thread(import_flux, inst)
        except ImportError as exc:
            raise BackendError(self.name, str(exc)) from exc
        uri = self._uri or os.environ.get("FLUX_URI")
        if uri is None:
            from ._flux_broker import ManagedBroker
            broker = ManagedBroker(inst, self._test_size, self._start_timeout)
            try:
                uri = await asyncio.to_thread(broker.start)
            except (OSError, RuntimeError) as exc:
                raise BackendError(self.name, f"could not start a Flux instance: {exc}") \
                    from exc
            self.broker = broker
        self.uri = uri
        # job output files: local /tmp for an instance of ours (one node); the session's
        # work directory for an attached one (whose jobs may run on other nodes)
        shared = self._work_dir if self.broker is None and self._work_dir and \
            os.path.isdir(self._work_dir) else None
        self._files = tempfile.mkdtemp(prefix=f".rhapsody-flux-{self.name}-", dir=shared)
        self._specs = SpecBuilder(self._files, self._token)
        self._path_blob = pickle.dumps(list(sys.path))
        from ._flux_link import FluxLink
        link = FluxLink(flux, uri, self._token, self._on_event, self._on_refused,
                        self._on_lost, self._prepare)
        validate = self.attached if self._validate is None else self._validate
        link.novalidate = not validate
        link.max_jobs = self._max_jobs
        try:
            await asyncio.to_thread(link.start, self._start_timeout)
        except BaseException as exc:
            link.stop()
            await self._end_instance()
            shutil.rmtree(self._files, ignore_errors=True)
            raise BackendError(self.name, f"could not connect to the Flux instance at {uri}: "
                               f"{exc}") from exc
        self._link = link

    async def _stop(self) -> None:
        self._claim_all_canceled()
        link = self._link
        if link is not None and self.attached and self._live and self._lost is None:
            # someone else's instance: cancel our jobs there and wait (a little) for them
            self._all_ended.clear()
            for uid in list(self._live):
                self._canceled.add(uid)
                link.cancel(uid)
            await asyncio.to_thread(self._all_ended.wait, 10)
        try:
            if link is not None:
                await asyncio.to_thread(link.stop)
            await self._end_instance()
            self._drain()  # deliver what already finished before the rest become CANCELED
        finally:  # even when the shutdown itself is cancelled (a timed-out caller)
            if self._files:
                shutil.rmtree(self._files, ignore_errors=True)

    async def _end_instance(self) -> None:
        broker = self.broker
        if broker is not None:
            await asyncio.to_thread(broker.stop)

    # -- submission (event loop) -----------------------------------------------------------
    def check_task(self, task: dict) -> None:
        link = self._link
        job_shape(task, link.cores if link else 0, link.gpus if link else -1)

    async def submit_tasks(self, tasks: Sequence[dict]) -> None:
        self._ensure_running()
        if not tasks:
            return
        link = self._link
        shapes = self._shapes
        for task in tasks:  # validate all before accepting any
            if task.get("task_backend_specific_kwargs") or task.get("ranks") is not None \
                    or task.get("cores") is not None or task.get("gpus") is not None:
                shapes[task["uid"]] = job_shape(task, link.cores, link.gpus)
        self._accept(tasks)
        link.submit(list(tasks))

    async def cancel_task(self, uid: str) -> bool:
        started = self._cancel_unstarted(uid)
        if started is not False:
            return bool(started)
        if self._lost is not None:
            return False
        self._canceled.add(uid)
        self._link.cancel(uid)
        return True  # the journal reports CANCELED once the job's processes are gone

    # -- the Flux thread -----------------------------------------------------------------
    def _prepare(self, task: dict) -> str | None:
        """The jobspec of ``task`` (its function pickled to a file); None if not to run."""
        uid = task["uid"]
        if self._claims.setdefault(uid, "flux") is CANCELED_CLAIM:
            return None
        shape = self._shapes.get(uid, _PLAIN_SHAPE)
        specs = self._specs
        try:
            if task.get("function") is not None:
                import cloudpickle
                blob = cloudpickle.dumps((task["function"], task["args"], task["kwargs"]))
                with open(specs.paths(uid)[2], "wb") as f:
                    f.write(self._path_blob)
                    f.write(blob)
            return specs.jobspec(task, shape)
        except Exception as exc:
            self.report(task, record_failure(task, exc), time.time())
            return None

    def _on_refused(self, task: dict, exc: BaseException) -> None:
        msg = f"Flux refused the job: {exc}"
        task["stderr"] = msg
        task["exception"] = TaskExecutionError(task["uid"], msg, None)
        self._forget(task["uid"])
        self.report(task, FAILED, time.time())

    def _on_event(self, task: dict, name: str, t: float, context: dict, jobid: int) -> bool:
        """A journal event of ``task``'s job; True once the job has ended."""
        uid = task["uid"]
        if name == "start":
            self._started.add(uid)
            self.report(task, RUNNING, t, jobid)
            return False
        if name == "exception":
            exc = outcome.exception_of(context)
            if exc is None:
                return False
            if uid in self._started:  # it ran: its finish event follows
                self._exceptions.setdefault(uid, exc)
                return False
            state = outcome.never_ran(task, self._specs.paths(uid), exc, uid in self._canceled)
        elif name == "finish":
            self._started.discard(uid)
            shape = self._shapes.get(uid, _PLAIN_SHAPE)
            state = outcome.finished(task, self._specs.paths(uid), int(context.get("status", 0)),
                                     self._exceptions.get(uid), uid in self._canceled,
                                     shape.timeout)
        else:
            return False
        self._forget(uid)
        self.report(task, state, t, jobid)
        link = self._link
        if link is not None and len(link._jobs) <= 1:
            self._all_ended.set()
        return True

    def _forget(self, uid: str) -> None:
        self._started.discard(uid)
        self._shapes.pop(uid, None)
        self._exceptions.pop(uid, None)
        self._canceled.discard(uid)

    def _on_lost(self, reason: str) -> None:
        """The Flux thread lost its instance: fail this backend's tasks, on the loop."""
        self._lost = reason
        self._all_ended.set()
        try:
            self._loop.call_soon_threadsafe(self._fail_all, reason)
        except RuntimeError:  # the loop is closed: nobody is waiting for these tasks
            pass

    def _fail_all(self, reason: str) -> None:
        if self.broker is not None and not self.broker.broker_pids():
            reason = f"the Flux broker of this backend's instance died ({reason})"
            threading.Thread(target=self.broker.kill_leftovers, daemon=True).start()
        else:
            reason = f"lost the Flux instance at {self.uri} ({reason})"
        self.fail_live(reason)
