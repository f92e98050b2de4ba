"""The Jupyter server extension: live sessions and their dashboards behind the server.

Enabled by ``etc/jupyter/jupyter_server_config.d/rhapsody_lab.json`` (installed with the
package). Under ``<base_url>rhapsody-lab/``: ``GET sessions`` lists the kernels' live
sessions (``registry``), ``dashboard/<key>/<plot>`` proxies HTTP and websockets to that
session's Bokeh server on its private Unix socket, so no port is opened (JupyterHub, HPC login
nodes). Jupyter and Tornado are imported when the server loads the extension, never by
``import rhapsody_lab``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["_jupyter_server_extension_points", "_load_jupyter_server_extension"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "rhapsody_lab.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from .handlers import setup_handlers
    setup_handlers(serverapp)


load_jupyter_server_extension = _load_jupyter_server_extension  # older server versions
