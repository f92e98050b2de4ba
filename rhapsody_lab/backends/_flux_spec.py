"""Tasks -> Flux jobspecs (RFC 14 version 1): options checked, the JSON built directly.

``task_backend_specific_kwargs`` of the Flux backend: ``ranks`` (tasks of the job, one slot
each), ``cores_per_rank``, ``gpus_per_rank`` (else the task's own ``ranks``, and its
``cores``/``gpus`` totals spread over the ranks, as policy routing reads them), ``type``
(``"mpi"``: the same job; Flux's shell provides PMI to every rank), ``cwd``, ``env``,
``shell`` and ``timeout`` (the job's duration: Flux ends it). Everything is validated on
the event loop before anything is submitted. The jobspec is assembled from pre-encoded
pieces (the environment, encoded once per distinct ``env``), since ``json.dumps`` of a
whole jobspec per task would dominate.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, NamedTuple

from ..api.errors import ResourceError, TaskValidationError
from ._options import check_keys
from ._subprocess import exec_options

__all__ = ["KNOWN_KEYS", "JobShape", "SpecBuilder", "job_shape"]

_FIELD = "task_backend_specific_kwargs"
KNOWN_KEYS = ("cores_per_rank", "cwd", "env", "gpus_per_rank", "ranks", "shell", "timeout",
              "type")
_RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_flux_runner.py")


class JobShape(NamedTuple):
    """What one task asks of Flux (from its options; all checked)."""

    ranks: int
    cores: int
    gpus: int
    cwd: str | None
    env: dict | None
    shell: bool
    timeout: float | None


_PLAIN = JobShape(1, 1, 0, None, None, False, None)


def job_shape(task: dict, total_cores: int = 0, total_gpus: int = -1) -> JobShape:
    """Validate ``task``'s options (TaskValidationError / ResourceError) and return its shape.

    ``total_cores``/``total_gpus``: the instance's (0 / -1: unknown, not checked).
    """
    kw = task.get(_FIELD) or {}
    top = {k: task.get(k) for k in ("ranks", "cores", "gpus") if task.get(k) is not None}
    if not kw and not top:
        return _PLAIN
    if kw:
        check_keys(task, "Flux", KNOWN_KEYS)
    uid = task["uid"]
    cwd, env, shell, timeout = exec_options(task)  # the checks every backend shares
    ints = []
    for key, low in (("ranks", 1), ("cores_per_rank", 1), ("gpus_per_rank", 0)):
        value, field = kw.get(key), f"{_FIELD}.{key}"
        if value is None and key == "ranks" and "ranks" in top:
            value, field = top["ranks"], "ranks"  # the task's own request (as routing reads)
        if value is None:
            ints.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise TaskValidationError(uid, f"{key} must be an integer >= {low}, got {value!r}",
                                      field=field)
        ints.append(value)
    ranks = ints[0] or 1
    cores, gpus = ints[1], ints[2]
    for key, total in (("cores", cores), ("gpus", gpus)):  # task totals -> per rank
        value = top.get(key)
        if total is None and value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TaskValidationError(uid, f"{key} must be an integer >= 0, got "
                                          f"{value!r}", field=key)
            per = -(-value // ranks)
            cores, gpus = (max(1, per), gpus) if key == "cores" else (cores, per)
    cores, gpus = cores or 1, gpus or 0
    kind = kw.get("type")
    if kind not in (None, "mpi"):
        raise TaskValidationError(uid, f"type must be 'mpi' or unset, got {kind!r}",
                                  field=f"{_FIELD}.type")
    if shell and task.get("function") is not None:
        raise TaskValidationError(uid, "shell applies to executable tasks only",
                                  field=f"{_FIELD}.shell")
    if cwd is not None and not os.path.isdir(cwd):
        raise TaskValidationError(uid, f"cwd {cwd!r} is not a directory here; create it first "
                                  "or pass an existing directory", field=f"{_FIELD}.cwd")
    if total_cores and ranks * cores > total_cores:
        raise ResourceError(uid, "cpu", f"{ranks} ranks x {cores} cores_per_rank = "
                            f"{ranks * cores} cores, but this Flux instance has {total_cores}; "
                            "ask for fewer, or start the backend with a larger test_size")
    if gpus and total_gpus == 0:
        raise ResourceError(uid, "gpu", f"gpus_per_rank={gpus}, but this Flux instance has no "
                            "GPUs; drop gpus_per_rank or run inside an instance with GPUs")
    if total_gpus > 0 and ranks * gpus > total_gpus:
        raise ResourceError(uid, "gpu", f"{ranks} ranks x {gpus} gpus_per_rank = {ranks * gpus}"
                            f" GPUs, but this Flux instance has {total_gpus}")
    return JobShape(ranks, cores, gpus, cwd, env, shell, timeout)


class SpecBuilder:
    """Builds jobspec JSON strings for one backend (its base environment, cwd and files)."""

    def __init__(self, files_dir: str, token: str, base_env: dict[str, str] | None = None):
        self.files_dir = files_dir
        self.token = token
        self.base_env = dict(os.environ if base_env is None else base_env)
        self._env_json: dict[Any, str] = {}
        self._cwd_json = json.dumps(os.getcwd())
        self.python = sys.executable

    def paths(self, uid: str) -> tuple[str, str, str, str]:
        """The stdout, stderr, function-input and function-output files of ``uid``."""
        base = os.path.join(self.files_dir, uid.replace(os.sep, "_"))
        return base + ".out", base + ".err", base + ".in", base + ".res"

    def command(self, task: dict, shape: JobShape) -> list[str]:
        if task.get("function") is not None:
            _, _, fin, fres = self.paths(task["uid"])
            return [self.python, "-S", _RUNNER, fin, fres]
        args = [str(a) for a in task.get("arguments") or ()]
        if shape.shell:
            return ["/bin/sh", "-c", " ".join([task["executable"], *args])]
        return [str(task["executable"]), *args]

    def _env(self, env: dict | None) -> str:
        key = None if env is None else tuple(sorted(env.items()))
        text = self._env_json.get(key)
        if text is None:
            merged = self.base_env if env is None else {**self.base_env, **env}
            text = self._env_json[key] = json.dumps(merged)
            if len(self._env_json) > 256:  # many distinct envs: keep the cache small
                self._env_json.clear()
        return text

    def jobspec(self, task: dict, shape: JobShape) -> str:
        """The jobspec of ``task`` as JSON (its output goes to files under ``files_dir``)."""
        uid = task["uid"]
        out, err, _, _ = self.paths(uid)
        with_ = [{"type": "core", "count": shape.cores}]
        if shape.gpus:
            with_.append({"type": "gpu", "count": shape.gpus})
        resources = [{"type": "slot", "count": shape.ranks, "label": "task", "with": with_}]
        output = {"stdout": {"type": "file", "path": out},
                  "stderr": {"type": "file", "path": err}}
        cwd = self._cwd_json if shape.cwd is None else json.dumps(shape.cwd)
        duration = 0 if shape.timeout is None else float(shape.timeout)
        # several ranks: each bound to its own cores (Flux binds the job's shell by default)
        affinity = '"cpu-affinity":"per-task",' if shape.ranks > 1 else ""
        return (
            '{"version":1,"resources":' + json.dumps(resources)
            + ',"tasks":[{"command":' + json.dumps(self.command(task, shape))
            + ',"slot":"task","count":{"per_slot":1}}],"attributes":{"system":{"duration":'
            + repr(duration) + ',"cwd":' + cwd + ',"environment":' + self._env(shape.env)
            + ',"shell":{"options":{' + affinity + '"output":' + json.dumps(output)
            + '}}},"user":'
            + json.dumps({"rhapsody_lab": self.token, "uid": uid}) + "}}")
