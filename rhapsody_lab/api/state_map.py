"""RHAPSODY's state vocabulary for tools built on its backends (RADICAL AsyncFlow).

``backend.get_task_states_map()`` returns a :class:`StateMapper`: ``mapper.DONE``,
``mapper.terminal_states``, ``to_main_state`` and ``get_backend_state`` translate between a
backend's own task states and the four main ones. Every rhapsody_lab backend speaks the
engine's states (``api.states``) directly, so its mapping is the identity; backends of
other projects register theirs with ``register_backend_tasks_states``.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar

from .errors import SessionError

__all__ = ["BackendMainStates", "StateMapper", "TasksMainStates"]


class BackendMainStates(Enum):
    """What a backend itself is: created, executing, stopped."""

    INITIALIZED = "INITIALIZED"
    RUNNING = "RUNNING"
    SHUTDOWN = "SHUTDOWN"


class TasksMainStates(Enum):
    """The task states every backend maps its own to."""

    DONE = "DONE"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    RUNNING = "RUNNING"


def _key(backend: Any, suffix: str = "") -> str:
    """The registry key of a backend given by name, module or instance."""
    if isinstance(backend, str):
        name = backend
    elif hasattr(backend, "__name__"):
        name = backend.__name__
    else:
        name = type(backend).__name__
    return name.lower() + suffix


def _main(enum: type[Enum], name: str) -> Enum:
    try:
        return enum[name.upper()]
    except KeyError:
        raise SessionError(f"unknown state {name!r}; expected one of "
                           f"{[m.name for m in enum]}") from None


class StateMapper:
    """Translates a backend's task states to the main states and back."""

    _backend_registry: ClassVar[dict[str, dict[Enum, Any]]] = {}

    def __init__(self, backend: str | Any):
        self.backend_module: Any | None = None if isinstance(backend, str) else backend
        self.backend_name = _key(backend)
        states = self._backend_registry.get(self.backend_name)
        if states is None:
            if getattr(backend, "speaks_main_states", False):
                self.register_backend_tasks_states_with_defaults(backend)
                states = self._backend_registry[self.backend_name]
            else:
                raise ValueError(
                    f"Backend '{self.backend_name}' not registered. Available backends: "
                    f"{sorted(self._backend_registry)}; register it with "
                    "StateMapper.register_backend_tasks_states(...)")
        self._state_map = states
        self._reverse_map = {v: k for k, v in states.items()}

    # -- registration ------------------------------------------------------------------
    @classmethod
    def register_backend_tasks_states(cls, backend: str | Any, done_state: Any,
                                      failed_state: Any, canceled_state: Any,
                                      running_state: Any, **additional_states: Any) -> None:
        """Map the four main task states (and any of ``additional_states``) for ``backend``."""
        cls._backend_registry[_key(backend)] = {
            TasksMainStates.DONE: done_state, TasksMainStates.FAILED: failed_state,
            TasksMainStates.CANCELED: canceled_state, TasksMainStates.RUNNING: running_state,
            **{_main(TasksMainStates, k): v for k, v in additional_states.items()}}

    @classmethod
    def register_backend_tasks_states_with_defaults(cls, backend: str | Any) -> None:
        """Register ``backend`` with task states named as the main ones."""
        cls.register_backend_tasks_states(backend, *(m.value for m in TasksMainStates))

    @classmethod
    def register_backend_states(cls, backend: str | Any, initialized_state: Any,
                                running_state: Any, shutdown_state: Any,
                                **additional_states: Any) -> None:
        """Map the backend's own states (kept under ``<name>_backend_states``)."""
        cls._backend_registry[_key(backend, "_backend_states")] = {
            BackendMainStates.INITIALIZED: initialized_state,
            BackendMainStates.RUNNING: running_state,
            BackendMainStates.SHUTDOWN: shutdown_state,
            **{_main(BackendMainStates, k): v for k, v in additional_states.items()}}

    @classmethod
    def register_backend_states_with_defaults(cls, backend: str | Any) -> None:
        """Register ``backend``'s own states named as the main ones."""
        cls.register_backend_states(backend, *(m.value for m in BackendMainStates))

    # -- translation -------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_state_map"][TasksMainStates[name]]
        except KeyError:
            raise AttributeError(f"'{type(self).__name__}' has no state '{name}'") from None

    def to_main_state(self, backend_state: Any) -> TasksMainStates:
        """The main state of one of the backend's states (ValueError if unknown)."""
        try:
            return self._reverse_map[backend_state]
        except KeyError:
            raise ValueError(f"Unknown backend state: {backend_state}") from None

    def get_backend_state(self, main_state: TasksMainStates | str) -> Any:
        """The backend's state for a main state, given as the enum or its name."""
        if isinstance(main_state, str):
            main_state = TasksMainStates[main_state]
        return self._state_map[main_state]

    @property
    def terminal_states(self) -> tuple:
        """The backend's DONE, FAILED and CANCELED."""
        return (self.DONE, self.FAILED, self.CANCELED)

    def __repr__(self) -> str:
        return f"StateMapper({self.backend_name!r})"
