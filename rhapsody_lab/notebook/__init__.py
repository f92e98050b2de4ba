"""The notebook layer: ``%load_ext rhapsody_lab``, the ``%rhapsody`` magics, widgets, reprs.

IPython and ipywidgets are imported here only (``pip install rhapsody-lab[notebook]``).
``load_ipython_extension`` registers the ``%rhapsody``/``%%rhapsody`` magics, the rich
reprs of sessions, tasks, task lists and statistics, and the transformer that lets
``%rhapsody start|wait|stop|cancel`` be awaited by their cell. The session runs on the
kernel's event loop (or, in a terminal IPython, on a background loop thread; see ``loop``),
found at the first magic, inside a cell, so loading the extension at kernel start-up works.
"""

from __future__ import annotations

from typing import Any

__all__ = ["get_controller", "load_ipython_extension", "unload_ipython_extension"]

_controllers: dict[int, Any] = {}  # id(shell) -> Controller


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext rhapsody_lab``: register the magics, reprs and await transformer."""
    from .cellcode import ai_question_transform, await_transformer
    from .controller import Controller
    from .magics import RhapsodyMagics
    from .reprs import register

    if id(ipython) in _controllers:
        return  # loaded already (IPython also guards, but reload_ext comes here)
    ctl = Controller(ipython)  # finds its loop at first use (see Controller.host)
    _controllers[id(ipython)] = ctl
    ipython.register_magics(RhapsodyMagics(ipython, ctl))
    register(ipython)
    ipython.input_transformers_post.append(await_transformer(ipython))
    ipython.input_transformer_manager.line_transforms.append(ai_question_transform)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext rhapsody_lab``: stop the session and remove what was registered."""
    from .reprs import unregister

    ctl = _controllers.pop(id(ipython), None)
    if ctl is None:
        return
    for transforms in (ipython.input_transformers_post,
                       ipython.input_transformer_manager.line_transforms):
        transforms[:] = [t for t in transforms if not getattr(t, "rhapsody", False)]
    unregister(ipython)
    magics = ipython.magics_manager.magics
    magics["line"].pop("rhapsody", None)
    magics["cell"].pop("rhapsody", None)
    ctl.shutdown()


def get_controller(ipython: Any = None) -> Any:
    """The ``Controller`` behind ``%rhapsody`` in ``ipython`` (the current shell by default)."""
    if ipython is None:
        from IPython import get_ipython
        ipython = get_ipython()
    return _controllers.get(id(ipython))


def _controller_for(session: Any) -> Any:
    for ctl in _controllers.values():
        if ctl.session is session:
            return ctl
    return None
