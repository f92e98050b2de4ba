"""``enable_logging``: RHAPSODY's one-call logging set-up, for the ``rhapsody_lab`` loggers.

Like RHAPSODY's: reconfigures the root logger (``logging.basicConfig(force=True)``), gives
the ``rhapsody_lab`` logger its own handler (so a framework that later replaces the root
handlers, as Dragon does, does not silence it) without propagation (no duplicate lines),
and sets ``level`` on every ``rhapsody_lab.*`` logger created so far. Call it before
creating backends.
"""

from __future__ import annotations

import logging
import sys
from typing import IO

__all__ = ["enable_logging"]

_FORMAT = "%(asctime)s | %(levelname)-8s | [%(name)s] | %(message)s"


def enable_logging(level: int | str = logging.INFO, format_string: str | None = _FORMAT,
                   stream: IO[str] | None = None, force: bool = True) -> None:
    """Log ``rhapsody_lab`` messages at ``level`` and above to ``stream`` (stderr)."""
    if isinstance(level, str):
        named = logging.getLevelName(level.upper())
        if not isinstance(named, int):
            from .api.errors import SessionError
            raise SessionError(f"enable_logging: level {level!r} is not a logging level; "
                               "pass logging.DEBUG or 'DEBUG', 'INFO', 'WARNING', 'ERROR'")
        level = named
    elif isinstance(level, bool) or not isinstance(level, int):
        from .api.errors import SessionError
        raise SessionError(f"enable_logging: level must be a logging level (an int such as "
                           f"logging.DEBUG, or its name), got {level!r}")
    fmt = format_string or _FORMAT
    stream = sys.stderr if stream is None else stream
    logging.basicConfig(level=level, format=fmt, stream=stream, force=force)
    ours = logging.getLogger("rhapsody_lab")
    ours.setLevel(level)
    for handler in list(ours.handlers):
        ours.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(fmt))
    ours.addHandler(handler)
    ours.propagate = False
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("rhapsody_lab."):
            logging.getLogger(name).setLevel(level)
