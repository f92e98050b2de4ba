"""RHAPSODY's module path ``backends.constants``: the state vocabulary (``api.state_map``)."""

from ..api.state_map import BackendMainStates, StateMapper, TasksMainStates

__all__ = ["BackendMainStates", "StateMapper", "TasksMainStates"]
