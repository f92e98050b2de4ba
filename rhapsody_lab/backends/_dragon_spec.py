"""Reading ``task_backend_specific_kwargs`` for the Dragon backend: mode, ranks, checks.

``plan(task, nodes)`` returns ``None`` for function-native tasks (the fast pool path) or a
``Plan`` (mode, the per-rank template keywords, timeout) for the process and job modes.
Everything is validated here, on the event loop and before anything is submitted, so a bad
template raises ``TaskValidationError`` and an impossible placement ``ResourceError``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..api.errors import ResourceError, TaskValidationError

__all__ = ["NodeInfo", "Plan", "plan"]

_FIELD = "task_backend_specific_kwargs"
_KNOWN = {"process_template", "process_templates", "type", "ranks", "timeout"}
_TEMPLATE_KEYS = {"cwd", "env", "stdin", "stdout", "stderr", "policy", "options"}
_MANAGED = {"target", "args", "kwargs"}


class NodeInfo(NamedTuple):
    """What placement checks need to know about one node of the runtime."""

    hostname: str
    h_uid: int
    cpus: frozenset
    gpus: frozenset


class Plan(NamedTuple):
    mode: str              # "function_process", "function_job", "executable_process", ...
    ranks: list            # one dict of ProcessTemplate keywords per rank
    timeout: float | None
    mpi: list | None = None  # launcher argv (e.g. ["/usr/bin/mpirun", "-n", "4"]) or None


def plan(task: dict, nodes: list[NodeInfo]) -> Plan | None:
    """How to run ``task``; ``None`` means function-native (the pool)."""
    kw = task.get("task_backend_specific_kwargs") or {}
    uid = task["uid"]
    is_fn = task.get("function") is not None
    if not kw:
        return None if is_fn else Plan("executable_process", [{}], None, False)
    if not isinstance(kw, dict):
        raise TaskValidationError(uid, f"{_FIELD} must be a dict, got {type(kw).__name__}",
                                  field=_FIELD)
    if set(kw) - _KNOWN - {"cwd", "env"}:
        from ._options import check_keys  # the message with a did-you-mean hint
        check_keys(task, "Dragon", sorted(_KNOWN | {"cwd", "env"}))
    timeout = kw.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(
            timeout, int | float) or timeout <= 0):
        raise TaskValidationError(uid, f"timeout must be a number of seconds > 0, got "
                                  f"{timeout!r}", field=f"{_FIELD}.timeout")
    kind = kw.get("type")
    if kind not in (None, "mpi"):
        raise TaskValidationError(uid, f"type must be 'mpi' or unset, got {kind!r}",
                                  field=f"{_FIELD}.type")
    ranks = kw.get("ranks")
    if ranks is not None and (isinstance(ranks, bool) or not isinstance(ranks, int)
                              or ranks < 1):
        raise TaskValidationError(uid, f"ranks must be an integer >= 1, got {ranks!r}",
                                  field=f"{_FIELD}.ranks")
    single, many = kw.get("process_template"), kw.get("process_templates")
    if single is not None and many is not None:
        raise TaskValidationError(uid, "give either process_template or process_templates, "
                                  "not both", field=f"{_FIELD}.process_templates")
    # top-level env/cwd (the concurrent backend's spelling) apply to every rank
    base = {k: kw[k] for k in ("cwd", "env") if kw.get(k) is not None}
    per_rank: list[dict] = []
    if many is not None:
        if not isinstance(many, list | tuple) or not many:
            raise TaskValidationError(uid, "process_templates must be a non-empty list of "
                                      "(nprocs, template_dict)",
                                      field=f"{_FIELD}.process_templates")
        for i, entry in enumerate(many):
            where = f"{_FIELD}.process_templates[{i}]"
            if not isinstance(entry, list | tuple) or len(entry) != 2:
                raise TaskValidationError(uid, f"entry must be (nprocs, template_dict), got "
                                          f"{entry!r}", field=where)
            n, tpl = entry
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise TaskValidationError(uid, f"nprocs must be an integer >= 1, got {n!r}",
                                          field=where)
            t = _template(uid, {**base, **(tpl or {})} if isinstance(tpl, dict) else tpl,
                          where, nodes)
            per_rank.extend([t] * n)
        mode = "job"
    else:
        if single is not None and not isinstance(single, dict):
            raise TaskValidationError(uid, "process_template must be a dict such as {} or "
                                      "{'cwd': ..., 'env': {...}}",
                                      field=f"{_FIELD}.process_template")
        t = _template(uid, {**base, **(single or {})}, f"{_FIELD}.process_template", nodes)
        n = ranks if ranks is not None else 1
        per_rank = [t] * n
        mode = "job" if (n > 1 or kind == "mpi") else "process"
    timeout = float(timeout) if timeout is not None else None
    kind_name = ("function_" if is_fn else "executable_")
    if kind == "mpi":
        launcher = None if is_fn else _mpi_launcher()
        if launcher is not None and len({id(t) for t in per_rank}) == 1:
            # Dragon's own PMIx launch aborts the whole runtime here (no PMIx server), so
            # an MPI executable starts under the MPI launcher, in one Dragon process
            return Plan(kind_name + "job", per_rank[:1], timeout,
                        [launcher, "-n", str(len(per_rank))])
        mode = "job"
    return Plan(kind_name + mode, per_rank, timeout, None)


def _mpi_launcher() -> str | None:
    import shutil
    return shutil.which("mpirun") or shutil.which("mpiexec")


def _template(uid: str, tpl: Any, where: str, nodes: list[NodeInfo]) -> dict:
    if not isinstance(tpl, dict):
        raise TaskValidationError(uid, f"a template must be a dict, got {type(tpl).__name__}",
                                  field=where)
    managed = _MANAGED & set(tpl)
    if managed:
        raise TaskValidationError(
            uid, f"{sorted(managed)} are set from the task (function/executable, args, "
            "kwargs, arguments), not in a template", field=f"{where}.{sorted(managed)[0]}")
    unknown = set(tpl) - _TEMPLATE_KEYS
    if unknown:
        raise TaskValidationError(uid, f"unknown template key(s) {sorted(unknown)}; known: "
                                  f"{sorted(_TEMPLATE_KEYS)}", field=where)
    out = dict(tpl)
    env = tpl.get("env")
    if env is not None:
        if not isinstance(env, dict) or not all(isinstance(k, str) for k in env):
            raise TaskValidationError(uid, "env must be a dict of str to str",
                                      field=f"{where}.env")
        out["env"] = {k: str(v) for k, v in env.items()}
    cwd = tpl.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        import os
        if not isinstance(cwd, os.PathLike):
            raise TaskValidationError(uid, f"cwd must be a path, got {cwd!r}",
                                      field=f"{where}.cwd")
        out["cwd"] = os.fspath(cwd)
    pol = tpl.get("policy")
    if pol is not None:
        out["policy"] = _policy(uid, pol, f"{where}.policy", nodes)
    return out


def _policy(uid: str, pol: Any, where: str, nodes: list[NodeInfo]) -> Any:
    from dragon.infrastructure.policy import Policy
    if isinstance(pol, dict):
        pol = dict(pol)
        for key, enum in (("placement", Policy.Placement), ("distribution", Policy.Distribution)):
            if isinstance(pol.get(key), str):
                try:
                    pol[key] = enum[pol[key].upper()]
                except KeyError:
                    raise TaskValidationError(uid, f"{key} must be one of "
                                              f"{[m.name for m in enum]}, got {pol[key]!r}",
                                              field=f"{where}.{key}") from None
        try:
            pol = Policy(**pol)
        except (TypeError, ValueError) as exc:
            raise TaskValidationError(uid, f"policy dict: {exc}", field=where) from exc
    if not isinstance(pol, Policy):
        raise TaskValidationError(uid, f"policy must be a dragon Policy or a dict, got "
                                  f"{type(pol).__name__}", field=where)
    if not nodes:
        return pol
    targets = nodes
    host = getattr(pol, "host_name", "") or ""
    if host:
        targets = [n for n in nodes if n.hostname == host]
        if not targets:
            raise ResourceError(uid, "node", f"{where}: host_name {host!r} is not a node of "
                                f"this Dragon runtime (nodes: {[n.hostname for n in nodes]})")
    hid = getattr(pol, "host_id", -1)
    if hid not in (-1, None):
        targets = [n for n in targets if n.h_uid == hid]
        if not targets:
            raise ResourceError(uid, "node", f"{where}: host_id {hid} is not a node of this "
                                "Dragon runtime")
    cpus = set(getattr(pol, "cpu_affinity", None) or ())
    if cpus and not any(cpus <= n.cpus for n in targets):
        raise ResourceError(uid, "cpu", f"{where}: cpu_affinity {sorted(cpus)} does not exist "
                            f"on {'node ' + host if host else 'any node'} (cpus: "
                            f"{sorted(targets[0].cpus)})")
    gpus = set(getattr(pol, "gpu_affinity", None) or ())
    if gpus and not any(gpus <= n.gpus for n in targets):
        raise ResourceError(uid, "gpu", f"{where}: gpu_affinity {sorted(gpus)} does not exist "
                            f"on {'node ' + host if host else 'any node'} (gpus: "
                            f"{sorted(targets[0].gpus) or 'none'})")
    return pol
