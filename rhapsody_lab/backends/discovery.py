"""The backend registry at RHAPSODY's import path (``rhapsody.backends.discovery``)."""

from .registry import BackendRegistry, discover_backends, get_backend

__all__ = ["BackendRegistry", "discover_backends", "get_backend"]
