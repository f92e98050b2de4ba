"""Turning a cell into a task, and letting blocking verbs be awaited.

``cell_function`` compiles a cell body into a function whose globals are the notebook's
namespace (so it sees the user's imports and variables; cloudpickle ships it by value to
process and Dask workers). The last expression is the return value; a body with top-level
``await`` becomes an ``async def``. The cell's lines stay in ``linecache`` so tracebacks
of a failing task show them.

``await_transformer`` rewrites an unindented ``%rhapsody start|wait|stop|cancel`` line into
``await …`` so that cell runs as a coroutine on the kernel's loop: the cell then waits for
the tasks without blocking the loop that runs them.
"""

from __future__ import annotations

import ast
import itertools
import linecache
import re
import shutil
from collections.abc import Callable
from typing import Any

__all__ = ["AWAITED_VERBS", "ai_question_transform", "await_transformer", "cell_function",
           "shell_command"]

AWAITED_VERBS = ("start", "wait", "stop", "cancel")
_counter = itertools.count(1)
_AI_LINE = re.compile(r"^(\s*)%rhapsody(\s+ai\b.*?)\s*$")
_MAGIC_LINE = re.compile(
    r"^((?:[A-Za-z_]\w*\s*=\s*)?)(get_ipython\(\)\.run_line_magic\((['\"])rhapsody\3,\s*"
    r"(['\"])(?:" + "|".join(AWAITED_VERBS) + r")\b)")


_AWAITS = (ast.Await, ast.AsyncFor, ast.AsyncWith)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _has_top_level_await(node: ast.AST) -> bool:
    """``await`` / ``async for`` / ``async with`` outside nested functions and classes."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _AWAITS):
            return True
        if not isinstance(child, _SCOPES) and _has_top_level_await(child):
            return True
    return False


def cell_function(cell: str, namespace: dict[str, Any], name: str) -> Callable[..., Any]:
    """Compile ``cell`` into a function ``name`` over ``namespace`` (SyntaxError if bad)."""
    filename = f"<rhapsody-task-{next(_counter)}-{name}>"
    tree = ast.parse(cell, filename=filename)
    body = tree.body or [ast.Pass()]
    if isinstance(body[-1], ast.Expr):
        body[-1] = ast.copy_location(ast.Return(value=body[-1].value), body[-1])
    is_async = _has_top_level_await(ast.Module(body=body, type_ignores=[]))
    fn_name = name if name.isidentifier() else "rhapsody_cell"
    template = ast.parse(f"{'async ' if is_async else ''}def {fn_name}():\n    pass")
    func = template.body[0]
    func.body = body
    ast.fix_missing_locations(template)
    code = compile(template, filename, "exec")
    linecache.cache[filename] = (len(cell), None, cell.splitlines(True), filename)
    local: dict[str, Any] = {}
    exec(code, namespace, local)  # the def only: globals are the notebook's namespace
    fn = local[fn_name]
    fn.__doc__ = f"Cell task {name!r}:\n{cell}"
    return fn


def shell_command(cell: str) -> tuple[str, list[str]]:
    """``(executable, arguments)`` running ``cell`` as a bash (else sh) script."""
    shell = shutil.which("bash") or "/bin/sh"
    return shell, ["-c", cell]


def await_transformer(shell: Any) -> Callable[[list[str]], list[str]]:
    """An IPython ``input_transformers_post`` entry (see the module docstring)."""

    def transform(lines: list[str]) -> list[str]:
        if not getattr(shell, "autoawait", False):
            return lines  # without autoawait a top-level await would be a SyntaxError
        return [_MAGIC_LINE.sub(r"\1await \2", line, count=1) for line in lines]

    transform.rhapsody = True  # type: ignore[attr-defined]
    return transform


def ai_question_transform(lines: list[str]) -> list[str]:
    """Keep ``%rhapsody ai What is HPC?`` a prompt (IPython reads a trailing ``?`` as help).

    An ``input_transformer_manager.line_transforms`` entry: it runs before IPython's
    help-syntax transform and turns such a line into the magic call directly.
    """
    out = []
    for line in lines:
        m = _AI_LINE.match(line)
        if m and m.group(2).endswith("?"):
            end = "\n" if line.endswith("\n") else ""
            line = f"{m.group(1)}get_ipython().run_line_magic('rhapsody', " \
                   f"{m.group(2).strip()!r}){end}"
        out.append(line)
    return out


ai_question_transform.rhapsody = True  # type: ignore[attr-defined]
