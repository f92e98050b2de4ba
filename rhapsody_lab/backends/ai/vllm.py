"""``DragonVllmInferenceBackend`` at RHAPSODY's import path (``rhapsody.backends.ai.vllm``)."""

from ..inference.vllm import DragonVllmInferenceBackend, VllmInferenceBackend

__all__ = ["DragonVllmInferenceBackend", "VllmInferenceBackend"]
