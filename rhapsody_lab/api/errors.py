"""The rhapsody_lab error hierarchy.

Every error says what was wrong, with which value, and what to do. The constructors keep
RHAPSODY's signatures so code catching them, or reading their attributes, runs unchanged.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendNotStartedError",
    "ResourceError",
    "RhapsodyError",
    "SessionError",
    "TaskExecutionError",
    "TaskValidationError",
]


class RhapsodyError(Exception):
    """Base class of every rhapsody_lab error."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


class BackendError(RhapsodyError):
    """A backend's infrastructure failed (start-up, lost connection, crash)."""

    def __init__(self, backend_name: str, message: str):
        self.backend_name = backend_name
        super().__init__(f"Backend '{backend_name}' failed: {message}")


class BackendNotStartedError(BackendError, RuntimeError):
    """A backend used before ``await backend``; a RuntimeError, as RHAPSODY raises."""


class TaskValidationError(RhapsodyError, ValueError):
    """A task definition is invalid; ``field`` names the offending field when known."""

    def __init__(self, task_uid: str | None, message: str, field: str | None = None):
        self.task_uid = task_uid
        self.field = field
        where = f"Task '{task_uid}' validation failed" if task_uid else "Task validation failed"
        super().__init__(f"{where}: {message}")


class TaskExecutionError(RhapsodyError):
    """A task ran and failed: a non-zero exit, a timeout, a crashed worker."""

    def __init__(self, task_uid: str, message: str, exit_code: int | None = None):
        self.task_uid = task_uid
        self.exit_code = exit_code
        self.stderr = message
        if exit_code is not None:
            text = f"Task '{task_uid}' failed with exit code {exit_code}: {message}"
        else:
            text = f"Task '{task_uid}' failed: {message}"
        super().__init__(text)


class SessionError(RhapsodyError, ValueError):
    """The session was misused: unknown backend, closed session, resubmitted task."""


class ResourceError(RhapsodyError):
    """A resource request cannot be met (more cores, GPUs or nodes than exist)."""

    def __init__(self, task_uid: str | None, resource_type: str, message: str):
        self.task_uid = task_uid
        self.resource_type = resource_type
        where = f"Task '{task_uid}' resource error" if task_uid else "Resource error"
        super().__init__(f"{where} ({resource_type}): {message}")
