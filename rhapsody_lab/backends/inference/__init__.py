"""Inference backends (vLLM and other OpenAI-compatible servers), imported when first used.

``rhapsody_lab.backends.inference.DragonVllmInferenceBackend`` is the class registered as
``"dragon_vllm"`` (and ``VllmInferenceBackend`` as ``"vllm"``); aiohttp is imported only
when one of them is.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DragonVllmInferenceBackend", "VllmInferenceBackend"]


def __getattr__(name: str) -> Any:
    if name == "VllmInferenceBackend":
        from .vllm import VllmInferenceBackend
        return VllmInferenceBackend
    if name == "DragonVllmInferenceBackend":
        from .dragon_vllm import DragonVllmInferenceBackend
        return DragonVllmInferenceBackend
    raise AttributeError(f"module 'rhapsody_lab.backends.inference' has no attribute {name!r}")
