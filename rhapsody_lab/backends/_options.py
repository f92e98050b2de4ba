"""Refusing ``task_backend_specific_kwargs`` keys a backend would silently ignore.

Each backend names the keys it reads; ``check_keys`` runs from its ``check_task``, which
the session calls only for tasks that carry options (the bulk path never gets here).
"""

from __future__ import annotations

import difflib
from collections.abc import Collection

from ..api.errors import TaskValidationError

__all__ = ["check_keys"]

_FIELD = "task_backend_specific_kwargs"
#: keys of other backends, for a hint when a task is routed to the wrong one
_OWNERS = {"process_template": "Dragon", "process_templates": "Dragon", "type": "Dragon",
           "ranks": "Dragon", "resources": "Dask", "retries": "Dask", "priority": "Dask",
           "workers": "Dask"}


def check_keys(task: dict, backend: str, known: Collection[str],
               executable_only: Collection[str] = ()) -> None:
    """Raise ``TaskValidationError`` for a key of ``task``'s options ``backend`` ignores.

    ``executable_only`` keys are refused on function tasks (they apply to a subprocess).
    """
    kw = task.get(_FIELD)
    if not kw:
        return
    uid = task.get("uid")
    if not isinstance(kw, dict):
        raise TaskValidationError(uid, f"{_FIELD} must be a dict, got {type(kw).__name__}",
                                  field=_FIELD)
    is_fn = task.get("function") is not None
    for key in kw:
        if key in known and not (is_fn and key in executable_only):
            continue
        field = f"{_FIELD}.{key}"
        if key in known:  # an executable-only key on a function task
            if key == "timeout":
                raise TaskValidationError(
                    uid, f"timeout is not supported for function tasks on the {backend} "
                    "backend: a running Python function cannot be stopped safely there, so "
                    "the timeout would be ignored. Check the time inside the function, run "
                    "the work as an executable (its timeout is enforced), or use the Dragon "
                    "backend (a function with a timeout runs in its own process)",
                    field=field)
            raise TaskValidationError(
                uid, f"{key} applies to executable tasks only on the {backend} backend (a "
                "function runs in the worker's process); set it inside the function, or "
                "run an executable", field=field)
        names = sorted(k for k in known if not (is_fn and k in executable_only))
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        owner = _OWNERS.get(key)
        if owner and owner.lower() != backend.lower():
            hint += f" ({key!r} is a {owner} backend option)"
        raise TaskValidationError(
            uid, f"unknown key {key!r} in {_FIELD} for the {backend} backend{hint}; "
            f"known keys{' for function tasks' if is_fn else ''}: {names or 'none'}",
            field=field)
