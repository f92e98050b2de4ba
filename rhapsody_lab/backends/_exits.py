"""How a process ended, in words: ``exit code 3`` or ``killed by signal 9 (SIGKILL)``.

``subprocess`` and ``multiprocessing`` both report a child ended by a signal as a
negative return code; ``failed with exit code -9`` leaves the user to decode it.
"""

from __future__ import annotations

import signal

__all__ = ["describe_exit"]


def describe_exit(code: int | None) -> str:
    """``code`` (a Popen/Process return code; negative: a signal) as a short phrase."""
    if code is None:
        return "exit status unknown"
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:  # not a signal this platform names
        return f"killed by signal {-code}"
    return f"killed by signal {-code} ({name})"
