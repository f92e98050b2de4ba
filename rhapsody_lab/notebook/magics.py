"""``%rhapsody VERB ...`` and ``%%rhapsody VERB ...``: one verb, one method, help is the docs.

Every verb has its own ``magic_arguments`` parser (``%rhapsody VERB --help``); bad input
prints the verb's usage and the error in one short message, never a traceback, and a cell
magic that cannot run keeps its body in ``_rhapsody_cell``. Verbs that schedule work
(``task``, ``map``, ``ai``) return at once; ``start``, ``wait``, ``stop`` and ``cancel``
are awaited by the cell (see ``cellcode.await_transformer``) so they block only the cell.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from IPython.core import magic_arguments as ma
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand

from ..api import AITask, ComputeTask, Session
from ..api.errors import SessionError
from ._magic_options import _backend, _bind, _help, _targets
from ._magic_text import (
    _check_name,
    _describe,
    _help_text,
    _map_iterable,
    _report,
    _Settle,
    _split,
    _usage,
)
from .cellcode import AWAITED_VERBS, cell_function, shell_command
from .controller import BACKEND_KINDS, Controller, tasks_from
from .loop import Pending
from .reprs import session_text, statistics_text

__all__ = ["VERBS", "RhapsodyMagics", "overview"]

CELL_VERBS = ("task", "ai")


@magics_class
class RhapsodyMagics(Magics):
    """Drive a rhapsody_lab Session from cells. ``%rhapsody --help`` lists the verbs."""

    def __init__(self, shell: Any, controller: Controller):
        super().__init__(shell)
        self.ctl = controller

    # -- dispatch ----------------------------------------------------------------------
    @no_var_expand
    @line_cell_magic
    def rhapsody(self, line: str, cell: str | None = None) -> Any:
        verb, _, rest = line.strip().partition(" ")
        if verb in ("", "help", "-h", "--help"):
            print(overview())
            return None
        method = VERBS.get(verb)
        if method is None:
            return self._fail(None, f"unknown verb {verb!r}; one of: {', '.join(VERBS)} "
                              "(`%rhapsody --help`)", cell)
        if cell is not None and verb not in CELL_VERBS:
            return self._fail(method, f"`%%rhapsody {verb}` takes no cell body; the cell was "
                              "not run", cell)
        parser = method.parser
        try:
            argv = _split(verb, rest)
        except UsageError as exc:
            return self._fail(method, str(exc), cell, verb)
        if "-h" in argv or "--help" in argv:
            print(_help_text(method))
            return self._done(verb)
        try:
            args = parser.parse_args(argv)
            args.raw = rest
            result = method(self, args, cell)
        except Exception as exc:  # bad input (or an expression that raised): short message
            return self._fail(method, _describe(exc), cell, verb)
        if verb in AWAITED_VERBS:
            return self._settle(verb, result)
        return None

    def _fail(self, method: Any, message: str, cell: str | None, verb: str = "") -> Any:
        usage = _usage(method) if method is not None else \
            "usage: %rhapsody VERB [options]   (%rhapsody --help)"
        kept = ""
        if cell is not None:
            self.shell.user_ns["_rhapsody_cell"] = cell
            kept = "\n(the cell's code is kept in `_rhapsody_cell`)"
        print(f"{usage}\nerror: {message}{kept}", file=sys.stderr)
        return self._done(verb)

    def _done(self, verb: str) -> Any:
        """Awaited verbs always hand the cell something awaitable."""
        if verb in AWAITED_VERBS and self.ctl.host.on_loop_thread():
            return self._settle(verb, None)
        return None

    def _settle(self, verb: str, pending: Pending | None) -> Any:
        """On the loop (a cell being awaited): an awaitable; elsewhere: block right here."""
        on_loop = self.ctl.host.on_loop_thread()
        if on_loop:
            return _Settle(verb, pending)
        if pending is not None:
            try:
                _report(verb, pending.result())
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                print(f"%rhapsody {verb}: {_describe(exc)}", file=sys.stderr)
        return None

    # -- verbs -------------------------------------------------------------------------
    @ma.magic_arguments("rhapsody start")
    @_help
    @ma.argument("--backend", "-b", action="append", metavar="KIND",
                 help="backend to start, repeatable or comma-separated: " + "; ".join(
                     f"{k} = {v}" for k, v in BACKEND_KINDS.items())
                 + " (default: concurrent)")
    @ma.argument("--workers", "-w", type=int, metavar="N",
                 help="slots per backend (threads, processes or Dask workers)")
    @ma.argument("--inference", metavar="URL",
                 help="also attach an inference backend (VllmInferenceBackend) to the "
                      "OpenAI-compatible server at URL, e.g. http://host:8001/v1")
    @ma.argument("--policy", metavar="FILE",
                 help="a policy file (JSON, or YAML with PyYAML) that splits the "
                      "allocation between backends and routes tasks to them "
                      "(Session.from_policy; replaces --backend/--workers/--inference)")
    @ma.argument("--name", metavar="UID", help="the session's uid")
    @ma.argument("--var", default="session",
                 help="variable bound to the Session (default: session)")
    def start(self, args: argparse.Namespace, cell: str | None) -> Pending | None:
        """Start a Session on this kernel's event loop and bind it to `session`."""
        if args.policy is not None:
            return self._start_policy(args)
        if args.workers is not None and args.workers < 1:
            raise SessionError(f"--workers must be >= 1, got {args.workers}")
        kinds = [k.strip() for spec in (args.backend or ["concurrent"])
                 for k in spec.split(",") if k.strip()]
        for k in kinds:
            if k not in BACKEND_KINDS:
                raise SessionError(f"unknown backend {k!r}; choose from "
                                   f"{', '.join(BACKEND_KINDS)}")
        if not args.var.isidentifier():
            raise SessionError(f"--var must be a Python name, got {args.var!r}")
        if args.inference is not None and not args.inference.startswith(("http://",
                                                                           "https://")):
            raise SessionError(f"--inference must be an http(s) URL like "
                               f"http://host:8001/v1, got {args.inference!r}")
        pending = self.ctl.start(kinds, args.workers, args.name, args.inference)
        self.shell.user_ns[args.var] = self.ctl.session
        self._show_session()
        return pending

    def _start_policy(self, args: argparse.Namespace) -> Pending:
        """``start --policy FILE``: ``Session.from_policy`` (validated before anything starts)."""
        if args.backend or args.workers is not None or args.inference is not None:
            raise SessionError("--policy decides the backends; drop --backend, --workers "
                               "and --inference (put them in the policy file)")
        if not args.var.isidentifier():
            raise SessionError(f"--var must be a Python name, got {args.var!r}")
        ctl = self.ctl
        if ctl.session is not None and not ctl.session.closed:
            raise SessionError(f"session {ctl.session.uid} is already running; "
                               "`%rhapsody stop` it first")
        session = Session.from_policy(os.path.expanduser(args.policy), uid=args.name)
        ctl.attach(session)

        async def start() -> None:
            try:
                await session.start()
            except BaseException as exc:
                ctl.start_error = exc
                raise

        pending = ctl.host.spawn(start())
        self.shell.user_ns[args.var] = session
        print(session._router.policy.summary())
        self._show_session()
        return pending

    @ma.magic_arguments("rhapsody status")
    @_help
    @ma.argument("--attach", metavar="SESSION",
                 help="adopt a Session created in a cell (a name or expression)")
    def status(self, args: argparse.Namespace, cell: str | None) -> None:
        """Show the session: backends, slots, counts by state, progress, cancel/stop."""
        if args.attach is not None:
            self.ctl.attach(self._eval(args.attach))
        if self.ctl.session is None:
            raise SessionError("no session yet: run `%rhapsody start` first")
        self._show_session()

    @ma.magic_arguments("rhapsody dashboard")
    @_help
    def dashboard(self, args: argparse.Namespace, cell: str | None) -> Any:
        """Open the live Bokeh dashboard of the session (rhapsody_lab.dashboard)."""
        session = self.ctl.require()
        try:
            from .. import dashboard
        except ImportError as exc:
            print(f"the dashboard is not available here ({exc}); install "
                  "rhapsody-lab[dashboard]. `%rhapsody status` shows the session panel.")
            return None
        show = getattr(dashboard, "show", None)
        if not callable(show):
            print("rhapsody_lab.dashboard has no show(session) yet; `%rhapsody status` "
                  "shows the session panel meanwhile.")
            return None
        try:
            shown = self.ctl.host.call(lambda: show(session))  # it subscribes on the loop
        except Exception as exc:  # the dashboard is optional: say why, keep the session
            print(f"the dashboard could not open: {_describe(exc)}", file=sys.stderr)
            return None
        if shown is not None:
            from IPython.display import display
            display(shown)
        return None

    @ma.magic_arguments("%rhapsody task")
    @_help
    @_bind("task")
    @_backend
    @ma.argument("--shell", action="store_true",
                 help="run the cell as a bash script (stdout/stderr/exit_code) instead "
                      "of Python")
    def task(self, args: argparse.Namespace, cell: str | None) -> None:
        """Run the cell body as a task without waiting: Python (the last expression is
        the return value) or, with --shell, a script. The task, bound to NAME, keeps the
        cell's code in `source`; `await NAME` or `%rhapsody wait NAME` waits for it."""
        if cell is None:
            raise SessionError("`task` is a cell magic: write `%%rhapsody task NAME` on the "
                               "first line of a cell and the code below it")
        _check_name(args.name)
        self.ctl.require()
        if args.shell:
            exe, arguments = shell_command(cell)
            task = ComputeTask(executable=exe, arguments=arguments, backend=args.backend,
                               source=cell, name=args.name)
        else:
            fn = cell_function(cell, self.shell.user_ns, args.name)
            task = ComputeTask(function=fn, backend=args.backend, source=cell,
                               name=args.name)
        self.ctl.submit([task])
        self.shell.user_ns[args.name] = task
        print(f"{task.uid} submitted, bound to `{args.name}` (await it or "
              f"`%rhapsody wait {args.name}`)")

    @ma.magic_arguments("rhapsody map")
    @_help
    @ma.argument("function", metavar="FUNCTION", help="a callable, by name or expression")
    @ma.argument("iterable", nargs="+", metavar="ITERABLE",
                 help="an expression giving the arguments, one task per item")
    @ma.argument("--name", "-n", default="tasks",
                 help="variable bound to the list of tasks (default: tasks)")
    @_backend
    def map(self, args: argparse.Namespace, cell: str | None) -> None:
        """Submit FUNCTION(item) for each item of ITERABLE without waiting."""
        _check_name(args.name)
        self.ctl.require()
        fn = self._eval(args.function)
        if not callable(fn):
            raise SessionError(f"{args.function!r} is a {type(fn).__name__}, not callable")
        expr = _map_iterable(args.raw)
        items = self._eval(expr)
        try:
            items = list(items)
        except TypeError:
            raise SessionError(f"{expr!r} is not iterable") from None
        tasks = [ComputeTask(function=fn, args=(x,), backend=args.backend) for x in items]
        if tasks:
            self.ctl.submit(tasks)
        self.shell.user_ns[args.name] = tasks
        print(f"{len(tasks)} tasks submitted, bound to `{args.name}`")

    @ma.magic_arguments("rhapsody wait")
    @_help
    @_targets
    @ma.argument("--timeout", "-t", type=float, metavar="SECONDS",
                 help="give up after this many seconds (tasks keep running)")
    def wait(self, args: argparse.Namespace, cell: str | None) -> Pending:
        """Wait until the tasks finish, with a progress bar when it takes a while."""
        if args.timeout is not None and args.timeout < 0:
            raise SessionError(f"--timeout must be >= 0, got {args.timeout}")
        tasks = self._tasks(args.targets)
        from .widgets import progress_view
        return self.ctl.wait(tasks, args.timeout, progress_view(self.ctl.widgets))

    @ma.magic_arguments("rhapsody cancel")
    @_help
    @_targets
    def cancel(self, args: argparse.Namespace, cell: str | None) -> Pending:
        """Cancel tasks that have not finished (a running Python function cannot be
        interrupted; queued tasks and executables can)."""
        return self.ctl.cancel(self._tasks(args.targets))

    @ma.magic_arguments("rhapsody stop")
    @_help
    def stop(self, args: argparse.Namespace, cell: str | None) -> Pending:
        """Close the session: running tasks become CANCELED, backends shut down."""
        return self.ctl.stop()

    @ma.magic_arguments("rhapsody ai")
    @_help
    @ma.argument("prompt", nargs="*", metavar="PROMPT",
                 help="the prompt (or the cell body with %%rhapsody ai)")
    @ma.argument("--name", "-n", default="reply", help="variable bound to the AITask")
    @_backend
    @ma.argument("--model", help="model name, if not the backend's default")
    @ma.argument("--max-tokens", type=int, dest="max_tokens", metavar="N")
    @ma.argument("--temperature", type=float, metavar="T")
    @ma.argument("--system", dest="system_prompt", metavar="TEXT", help="system prompt")
    def ai(self, args: argparse.Namespace, cell: str | None) -> None:
        """Send a prompt to the session's inference backend without waiting."""
        _check_name(args.name)
        session = self.ctl.require()
        prompt = (cell if cell is not None else " ".join(args.prompt)).strip()
        if not prompt:
            raise SessionError("no prompt: write `%rhapsody ai your question` or put it in "
                               "a `%%rhapsody ai` cell")
        if not any("ai" in b.task_kinds for b in session.backends.values()):
            print(f"session {session.uid} has no inference backend, so the prompt was not "
                  "sent; start one with `%rhapsody start --inference http://host:8001/v1`"
                  " or session.add_backend(VllmInferenceBackend(endpoint=...)).")
            if cell is not None:
                self.shell.user_ns["_rhapsody_cell"] = cell
            return
        # an AITask names its target (RHAPSODY's rule): the session's first inference backend
        backend = args.backend or next(n for n, b in session.backends.items()
                                       if "ai" in b.task_kinds)
        task = AITask(prompt=prompt, backend=backend, model=args.model,
                      max_tokens=args.max_tokens, temperature=args.temperature,
                      system_prompt=args.system_prompt, source=prompt)
        self.ctl.submit([task])
        self.shell.user_ns[args.name] = task
        print(f"{task.uid} sent, bound to `{args.name}` (`await {args.name}`; then "
              f"{args.name}.response)")

    # -- helpers -----------------------------------------------------------------------
    def _eval(self, expr: str) -> Any:
        return eval(expr, self.shell.user_ns)  # the user's own expression, in their kernel

    def _tasks(self, targets: list[str]) -> list | None:
        if not targets:
            return None
        out: list = []
        for expr in targets:
            out += tasks_from(self._eval(expr))
        return out

    def _show_session(self) -> None:
        session = self.ctl.session
        if self.ctl.widgets:
            from IPython.display import display

            from .widgets import panel_for
            display(panel_for(self.ctl, session))
        else:
            print(session_text(session))
            if not session.closed and self.ctl.start_error is None:
                print(statistics_text(self.ctl.statistics()))


VERBS: dict[str, Any] = {
    name: getattr(RhapsodyMagics, name)
    for name in ("start", "status", "dashboard", "task", "map", "wait", "cancel", "stop",
                 "ai")
}


def overview() -> str:
    """``%rhapsody --help``: every verb's usage and summary."""
    parts = ["%rhapsody VERB [options]  /  %%rhapsody VERB [options] + cell body",
             "Drive a rhapsody_lab Session from the notebook. Verbs:", ""]
    for method in VERBS.values():
        doc = (method.parser.description or "").strip().splitlines()
        summary = " ".join(line.strip() for line in doc).split(". ")[0].rstrip(".")
        parts.append(f"  {_usage(method)[7:]}")
        parts.append(f"      {summary}.")
    parts += ["", "`%rhapsody VERB --help` describes one verb in full."]
    return "\n".join(parts)


RhapsodyMagics.rhapsody.__doc__ = overview()
