"""RHAPSODY's module path ``backends.ai.vllm``."""

from ..inference.vllm import DragonVllmInferenceBackend, VllmInferenceBackend

__all__ = ["DragonVllmInferenceBackend", "VllmInferenceBackend"]
