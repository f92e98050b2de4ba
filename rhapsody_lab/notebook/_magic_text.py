"""The ``%rhapsody`` magics' text: splitting a line, usage and error messages, and the
object an un-awaited verb returns (awaitable, displaying nothing)."""

from __future__ import annotations

import asyncio
import re
import shlex
import sys
from typing import Any

from IPython.core.error import UsageError

from ..api.errors import RhapsodyError, SessionError
from .loop import Pending


class _Settle:
    """What a cell awaits for start/wait/stop/cancel: the work, then a short report."""

    def __init__(self, verb: str, pending: Pending | None):
        self.verb = verb
        self.pending = pending

    def __await__(self):
        if self.pending is None:
            return None
        try:
            result = yield from self.pending.__await__()
        except Exception as exc:  # a short message in the cell, never a traceback
            print(f"%rhapsody {self.verb}: {_describe(exc)}", file=sys.stderr)
            return None
        _report(self.verb, result)
        return None

    def __repr__(self) -> str:
        return f"<%rhapsody {self.verb}: {self.pending!r}>"

    def _ipython_display_(self) -> None:
        """A cell that does not await it shows nothing (the session panel says it all)."""


def _report(verb: str, result: Any) -> None:
    if verb == "cancel" and result is not None:
        n, asked = result
        print(f"canceled {n} of {asked} unfinished tasks")
    elif verb == "stop" and result is not None:
        print(f"session {result} stopped")


_APOSTROPHE = re.compile(r"(?<=\w)'(?=\w)")


def _split(verb: str, rest: str) -> list[str]:
    """The verb's arguments, split like a shell (``shlex``); UsageError on a lone quote.

    A prompt (``ai``) keeps its apostrophes: ``%rhapsody ai what's HPC?`` is a prompt.
    """
    if verb == "ai":
        rest = _APOSTROPHE.sub("\\\\'", rest)
    try:
        return shlex.split(rest)
    except ValueError as exc:
        raise UsageError(f"unbalanced quote in `%rhapsody {verb} {rest.strip()}` ({exc}); "
                         "close the quote, or escape it with a backslash") from None


_MAP_OPTION = re.compile(r"(?:^|\s)(?:-n|--name|-b|--backend)(?:\s+|=)\S+")


def _map_iterable(raw: str) -> str:
    """The ITERABLE of ``map`` as typed (quotes kept): the text after FUNCTION, sans options."""
    rest = _MAP_OPTION.sub(" ", raw).strip()
    return rest.partition(" ")[2].strip()


def _help_text(method: Any) -> str:
    text = method.parser.format_help().strip()
    return "usage: " + text.removeprefix("::").strip()


def _usage(method: Any) -> str:
    """``usage: %rhapsody VERB ...`` (IPython's formatter prefixes reST ``::``)."""
    text = method.parser.format_usage().strip().removeprefix("::").strip()
    return f"usage: {text}"


def _check_name(name: str) -> None:
    if not name.isidentifier():
        raise SessionError(f"NAME must be a Python variable name, got {name!r}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"SyntaxError in the cell, line {exc.lineno}: {exc.msg}"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, RhapsodyError | UsageError | asyncio.TimeoutError):
        return text
    return f"{type(exc).__name__}: {text}"
