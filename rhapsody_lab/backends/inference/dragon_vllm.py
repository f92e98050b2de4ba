"""The vLLM backend under RHAPSODY's name, ``DragonVllmInferenceBackend``."""

from __future__ import annotations

from .vllm import VllmInferenceBackend

__all__ = ["DragonVllmInferenceBackend"]


class DragonVllmInferenceBackend(VllmInferenceBackend):
    """The vLLM backend under its RHAPSODY name (``name="vllm"`` by default).

    Placement of a managed server (``placement=``, as for ``Service``): under a Dragon
    runtime (a script started with ``dragon``) ``"auto"`` starts the vLLM server as a Dragon
    process, on node ``host=`` if that names a node of the runtime (``ResourceError`` if it
    is not one) or where the runtime puts it (then it listens on ``0.0.0.0``); the endpoint
    is ``http://<node hostname>:<port>/v1`` and ``service.placement`` says
    ``"dragon on <node> (puid N)"``. Elsewhere (or with ``placement="local"``) it is a local
    process, exactly as for ``VllmInferenceBackend``; ``placement="dragon"`` outside Dragon
    raises ``BackendError``. Multi-node (``num_nodes > 1``) servers are not placed yet.
    """

