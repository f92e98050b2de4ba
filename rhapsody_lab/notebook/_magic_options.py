"""Option groups shared by several ``%rhapsody`` verbs, as ``magic_arguments`` decorators."""

from __future__ import annotations

from collections.abc import Callable

from IPython.core import magic_arguments as ma

__all__ = ["_backend", "_bind", "_help", "_targets"]


def _help(f: Callable) -> Callable:
    return ma.argument("-h", "--help", action="store_true", help="show this help")(f)


def _backend(f: Callable) -> Callable:
    return ma.argument("-b", "--backend", metavar="NAME", default=None,
                       help="the session backend to run on (default: the first that can)")(f)


def _bind(default: str) -> Callable:
    def deco(f: Callable) -> Callable:
        return ma.argument("name", nargs="?", default=default, metavar="NAME",
                           help=f"variable to bind the result to (default: {default})")(f)
    return deco


def _targets(f: Callable) -> Callable:
    return ma.argument("targets", nargs="*", metavar="TASKS",
                       help="names (or expressions) of tasks or lists of tasks; "
                            "none means every task of the session")(f)
