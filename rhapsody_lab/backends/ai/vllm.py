"""RHAPSODY's module path ``backends.ai.vllm``."""

from ..inference.dragon_vllm import DragonVllmInferenceBackend
from ..inference.vllm import VllmInferenceBackend

__all__ = ["DragonVllmInferenceBackend", "VllmInferenceBackend"]
