"""The user-facing API: tasks, the session, states, errors and the event stream."""

from .backend import BaseBackend
from .errors import (
    BackendError,
    ResourceError,
    RhapsodyError,
    SessionError,
    TaskExecutionError,
    TaskValidationError,
)
from .events import Event, EventStream
from .session import Session
from .state_manager import TaskStateManager
from .states import CANCELED, DONE, FAILED, NEW, QUEUED, RUNNING, STATES, SUBMITTED, TERMINAL_STATES
from .task import AITask, BaseTask, ComputeTask

__all__ = [
    "CANCELED",
    "DONE",
    "FAILED",
    "NEW",
    "QUEUED",
    "RUNNING",
    "STATES",
    "SUBMITTED",
    "TERMINAL_STATES",
    "AITask",
    "BackendError",
    "BaseBackend",
    "BaseTask",
    "ComputeTask",
    "Event",
    "EventStream",
    "ResourceError",
    "RhapsodyError",
    "Session",
    "SessionError",
    "TaskExecutionError",
    "TaskStateManager",
    "TaskValidationError",
]
