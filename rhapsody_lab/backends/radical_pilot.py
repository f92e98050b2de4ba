"""RadicalExecutionBackend: tasks as RADICAL-Pilot tasks on one pilot of a real RP session.

RHAPSODY's constructor: ``resources`` (a pilot description: ``resource``, ``runtime`` in
minutes, ``cores``, ...; default ``local.localhost`` with this machine's cores) and
``raptor_config`` (``{"masters": [{..., "workers": [{...}]}]}``: raptor masters and workers
that run function tasks as ``TASK_FUNCTION``; without it function tasks are refused). RP
runs its own threads: its task callbacks only ``report`` to the engine's one drain, with
RUNNING at ``AGENT_EXECUTING``. RP's session, sandbox and logs live under
``<work dir>/.rhapsody-radical/``; ``shutdown`` closes the session and ends every process
left with its session id (RP's agent detaches from us).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..api.backend import BaseBackend, record_failure
from ..api.errors import BackendError, SessionError
from ..api.states import TERMINAL_STATES
from . import _rp_env, _rp_tasks

__all__ = ["DEFAULT_RAPTOR", "RadicalExecutionBackend"]

log = logging.getLogger(__name__)

_PILOT_FINAL = TERMINAL_STATES  # RP's final pilot states carry the same names

#: one raptor master with one one-rank worker: enough to run function tasks
DEFAULT_RAPTOR: dict = {"masters": [{"ranks": 1, "workers": [{"ranks": 1}]}]}


class RadicalExecutionBackend(BaseBackend):
    """Runs executables (and, with raptor, Python functions) on a RADICAL-Pilot pilot.

    ``start_timeout``: seconds the pilot may take to become active. ``progress``: called
    with a line of text at each pilot state change (``pilot_state`` holds the latest).
    """

    supports_implicit_data_linking = True
    supports_explicit_data_linking = True

    def __init__(self, resources: dict | None = None, raptor_config: dict | None = None,
                 name: str = "radical_pilot", *, start_timeout: float = 300.0,
                 progress: Callable[[str], None] | None = None):
        super().__init__(name)
        if resources is not None and not isinstance(resources, dict):
            raise SessionError(f"resources must be a dict pilot description such as "
                               f"{{'resource': 'local.localhost', 'cores': 2}}, got "
                               f"{resources!r}")
        if raptor_config is not None and not (isinstance(raptor_config, dict) and (
                not raptor_config or isinstance(raptor_config.get("masters"), list))):
            raise SessionError(f"raptor_config must be {{'masters': [{{'workers': [...]}}]}}, "
                               f"got {raptor_config!r}")
        if isinstance(start_timeout, bool) or not isinstance(start_timeout, int | float) \
                or start_timeout <= 0:
            raise SessionError(f"start_timeout must be a number of seconds > 0, got "
                               f"{start_timeout!r}")
        if progress is not None and not callable(progress):
            raise SessionError(f"progress must be callable(str), got {progress!r}")
        self.resources = dict(resources or {})
        self.raptor_config = copy.deepcopy(raptor_config or {})
        self.raptor_mode = bool(self.raptor_config.get("masters"))
        self._start_timeout = float(start_timeout)
        self._progress = progress
        self.pilot_state: str | None = None
        self.progress_log: list[tuple[float, str]] = []
        self.session: Any = None           # rp.Session, once started
        self._env_held = False             # holds _rp_env.prepare until _close_rp
        self.pilot_manager: Any = None
        self.task_manager: Any = None
        self.resource_pilot: Any = None
        self.masters: list[Any] = []
        self.workers: list[Any] = []
        self._master_cycle: Any = None
        self._rp: Any = None
        self._cores = 1
        self._t0 = 0.0
        self._pilot_failed = False

    # -- life cycle --------------------------------------------------------------------
    def capacity(self) -> int:
        return self._cores

    @property
    def session_uid(self) -> str | None:
        """RP's session id (also the name of its sandbox directory)."""
        return self.session.uid if self.session is not None else None

    async def _start(self) -> None:
        self._t0 = time.time()
        self._say("starting a RADICAL-Pilot session")
        try:
            await asyncio.wait_for(asyncio.to_thread(self._start_rp), self._start_timeout)
        except BaseException as exc:
            await self._close_rp()
            if isinstance(exc, TimeoutError | asyncio.TimeoutError):
                raise BackendError(self.name, f"the pilot was not active after "
                                   f"{self._start_timeout:.0f} s (state {self.pilot_state}); "
                                   f"raise start_timeout= or see {self._rp_dir()}") from exc
            raise

    def _rp_dir(self) -> str:
        return os.path.join(os.path.abspath(self._work_dir), ".rhapsody-radical")

    def _start_rp(self) -> None:
        """On a thread: session, managers, pilot (wait until active), raptor."""
        base = self._rp_dir()
        _rp_env.prepare(base)
        self._env_held = True
        try:
            import radical.pilot as rp
        except ImportError as exc:
            raise BackendError(self.name, f"radical.pilot is not installed ({exc}); "
                               "pip install 'rhapsody_lab[radical]'") from exc
        self._rp = rp
        self.session = rp.Session(cfg={"base": base, "client_sandbox": base})
        self._say(f"session {self.session.uid}")
        self.pilot_manager = rp.PilotManager(self.session)
        self.task_manager = rp.TaskManager(self.session)
        self.pilot_manager.register_callback(self._on_pilot)
        self.task_manager.register_callback(self._on_task)
        desc = _rp_env.pilot_description(self.resources, os.path.join(base, "sandbox"))
        self._cores = max(1, int(desc.get("cores") or 1))
        self.resource_pilot = self.pilot_manager.submit_pilots(rp.PilotDescription(desc))
        self.task_manager.add_pilots(self.resource_pilot)
        state = self.resource_pilot.wait([rp.PMGR_ACTIVE, *_PILOT_FINAL])
        if state != rp.PMGR_ACTIVE:
            raise BackendError(self.name, f"the pilot ended {state} before it became active "
                               f"(see {self.session.path} and {desc['sandbox']})")
        if self.raptor_mode:
            self._start_raptor(rp)

    def _start_raptor(self, rp: Any) -> None:
        for n, spec in enumerate(self.raptor_config["masters"]):
            spec = dict(spec)
            workers = spec.pop("workers", None) or [{"ranks": 1}]
            md = rp.TaskDescription(spec)
            md.mode = rp.RAPTOR_MASTER
            md.uid = f"{self.name}.master.{n:04d}"
            master = self.resource_pilot.submit_raptors(md)[0]
            self.masters.append(master)
            for k, wspec in enumerate(workers):
                wspec = dict(wspec)
                wd = rp.TaskDescription({**wspec, "mode": rp.RAPTOR_WORKER,
                                         "raptor_class": wspec.pop("worker_type",
                                                                   "DefaultWorker")})
                wd.uid = f"{md.uid}.worker.{k:04d}"
                self.workers.extend(master.submit_workers([wd]))
        self._master_cycle = itertools.cycle([m.uid for m in self.masters])
        self._say(f"raptor: {len(self.masters)} master(s), {len(self.workers)} worker(s)")

    async def _stop(self) -> None:
        self._claim_all_canceled()
        await self._close_rp()
        self._drain()  # outcomes already reported land before the rest become CANCELED

    async def _close_rp(self) -> None:
        session = self.session
        if session is not None:
            await self._close_session(session)
        if self._env_held:  # the kernel's environment as it was (when no RP backend is left)
            self._env_held = False
            _rp_env.release()

    async def _close_session(self, session: Any) -> None:
        sid = session.uid
        try:
            await asyncio.wait_for(asyncio.to_thread(session.close, download=False), 60)
        except (TimeoutError, asyncio.TimeoutError):
            log.warning("RP session %s did not close within 60 s; killing its processes", sid)
        except Exception:
            log.exception("closing RP session %s failed", sid)
        n = await asyncio.to_thread(_rp_env.kill_session_processes, sid)
        if n:
            log.info("ended %d leftover process(es) of RP session %s", n, sid)
        self._say("session closed")

    # -- progress ----------------------------------------------------------------------
    def _say(self, text: str) -> None:
        line = f"[{self.name} +{time.time() - self._t0:5.1f}s] {text}"
        self.progress_log.append((time.time(), text))
        log.info(line)
        if self._progress is not None:
            try:
                self._progress(line)
            except Exception:
                log.exception("progress callback of backend %s failed", self.name)

    def _on_pilot(self, pilot: Any, state: str) -> None:
        """RP's thread: a pilot state change."""
        if state == self.pilot_state:
            return
        self.pilot_state = state
        self._say(f"pilot {pilot.uid}: {state}")
        if state in _PILOT_FINAL and self._backend_state == "RUNNING" and not \
                self._pilot_failed:
            self._pilot_failed = True
            try:
                self._loop.call_soon_threadsafe(self.fail_live, f"pilot {pilot.uid} {state}")
            except RuntimeError:
                pass

    # -- tasks ---------------------------------------------------------------------------
    def check_task(self, task: dict) -> None:
        if task.get("function") is not None and not self.raptor_mode:
            from ..api.errors import TaskValidationError
            raise TaskValidationError(task.get("uid"), "function tasks on RADICAL-Pilot run "
                                      "in raptor: create the backend with raptor_config= "
                                      "(e.g. {'masters': [{'workers': [{'ranks': 1}]}]})",
                                      "function")

    async def submit_tasks(self, tasks: Sequence[dict]) -> None:
        self._ensure_running()
        if not tasks:
            return
        rp, descs, now = self._rp, [], time.time()
        self._accept(tasks)
        for task in tasks:
            raptor = next(self._master_cycle) if task.get("function") is not None and \
                self._master_cycle is not None else None
            try:
                descs.append(_rp_tasks.describe(rp, task, raptor))
            except Exception as exc:
                self.report(task, record_failure(task, exc), now)
        if descs:
            try:
                await asyncio.to_thread(self.task_manager.submit_tasks, descs)
            except Exception as exc:
                for td in descs:
                    task = self._live.get(_rp_tasks.our_uid(td.uid))
                    if task is not None:
                        self.report(task, record_failure(task, exc), time.time())

    async def cancel_task(self, uid: str) -> bool:
        if uid not in self._live:
            return False
        await asyncio.to_thread(self.task_manager.cancel_tasks,
                                [_rp_tasks.PREFIX + uid])
        return True  # CANCELED arrives through RP's callback once the process is ended

    def _on_task(self, rp_task: Any, state: str) -> None:
        """RP's thread: a task state change; ours are reported to the drain."""
        ours = _rp_tasks.our_state(state)
        if ours is None:
            return
        task = self._live.get(_rp_tasks.our_uid(rp_task.uid))
        if task is None:
            return  # a raptor master/worker, or a task already final here
        if ours != "RUNNING":
            try:
                _rp_tasks.fill_outcome(task, rp_task, ours)
            except Exception as exc:
                ours = record_failure(task, exc)
        self.report(task, ours, time.time())

    # -- RHAPSODY's data linking (tasks run in their own sandboxes) ---------------------
    def link_explicit_data_deps(self, src_task: dict | None = None,
                                dst_task: dict | None = None, file_name: str | None = None,
                                file_path: str | None = None) -> dict:
        """Stage ``file_path`` (or ``src_task``'s ``file_name``) into ``dst_task``'s sandbox."""
        if dst_task is None:
            raise SessionError("link_explicit_data_deps: dst_task is required")
        if not file_name and not file_path:
            raise SessionError("link_explicit_data_deps: give file_name or file_path")
        name = file_name or os.path.basename(file_path or "")
        if file_path:
            dep = {"source": file_path, "target": f"task:///{name}", "action": "Transfer"}
        else:
            if src_task is None:
                raise SessionError("link_explicit_data_deps: src_task is required without "
                                   "file_path")
            dep = {"source": f"pilot:///{_rp_tasks.PREFIX}{src_task['uid']}/{name}",
                   "target": f"task:///{name}", "action": "Link"}
        kwargs = dst_task.setdefault("task_backend_specific_kwargs", {})
        kwargs.setdefault("input_staging", []).append(dep)
        return dep

    def link_implicit_data_deps(self, src_task: dict, dst_task: dict) -> None:
        """Symlink ``src_task``'s sandbox files into ``dst_task``'s (a ``pre_exec`` step)."""
        src = _rp_tasks.PREFIX + src_task["uid"]  # its sandbox's name
        cmd = (f'for f in "$RP_PILOT_SANDBOX/{src}"/*; do case "$(basename "$f")" in '
               f'{src}*) ;; *) ln -sf "$f" "$RP_TASK_SANDBOX" ;; esac; done')
        kwargs = dst_task.setdefault("task_backend_specific_kwargs", {})
        kwargs.setdefault("pre_exec", []).append(cmd)
