"""Finding a flux-core install and making its Python bindings importable here.

The prefix is ``$RHAPSODY_LAB_FLUX_PREFIX``, else the one ``.ci/setup.d/45-flux.sh`` builds
(``~/.cache/rhapsody_lab/flux-0.88.0``), else the one of ``flux`` on ``PATH``. The
``flux-python`` wheel (the ``flux`` extra) links ``libflux-core.so.2`` & co. without a path:
its libraries are loaded here first, by full path and globally, so the dynamic loader finds
them already there (no ``LD_LIBRARY_PATH`` or re-exec needed). Without the wheel, the
bindings the prefix installed for its own Python are used when that is this Python.
"""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import sys
from typing import Any, NamedTuple

__all__ = ["FLUX_VERSION", "FluxInstall", "broker_env", "find_install", "import_flux"]

FLUX_VERSION = "0.88.0"
ENV_PREFIX = "RHAPSODY_LAB_FLUX_PREFIX"
CACHE_PREFIX = os.path.join("~", ".cache", "rhapsody_lab", f"flux-{FLUX_VERSION}")
_HOW = ("build it with `bash .ci/setup.d/45-flux.sh` (flux-core 0.88.0 into "
        f"{CACHE_PREFIX}), or set {ENV_PREFIX} to a flux-core install prefix")
# load order: each library after the ones it links
_LIBS = ("libflux-idset.so", "libflux-hostlist.so", "libflux-taskmap.so",
         "libflux-core.so", "libflux-optparse.so", "libflux-schedutil.so")


class FluxInstall(NamedTuple):
    """A flux-core install: its prefix, ``flux`` command and library directory."""

    prefix: str
    flux: str
    libdir: str


def find_install() -> FluxInstall | None:
    """The flux-core install to use, or None when there is none."""
    env = os.environ.get(ENV_PREFIX)
    candidates = [env] if env else []
    candidates.append(os.path.expanduser(CACHE_PREFIX))
    on_path = shutil.which("flux")
    if on_path:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(on_path))))
    for prefix in candidates:
        flux = os.path.join(prefix, "bin", "flux")
        if os.access(flux, os.X_OK):
            return FluxInstall(prefix, flux, os.path.join(prefix, "lib"))
        if prefix == env:
            return None  # an explicit prefix that is wrong: do not guess another one
    return None


def missing_reason() -> str:
    """Why no flux-core install was found, with the fix."""
    env = os.environ.get(ENV_PREFIX)
    if env:
        return f"{ENV_PREFIX}={env} has no bin/flux; {_HOW}"
    return f"no flux-core install found (no {CACHE_PREFIX}, no `flux` on PATH); {_HOW}"


def broker_env(inst: FluxInstall, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for ``flux`` commands and brokers of ``inst``."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.path.join(inst.prefix, "bin") + os.pathsep + env.get("PATH", "")
    libs = env.get("LD_LIBRARY_PATH")
    env["LD_LIBRARY_PATH"] = inst.libdir + (os.pathsep + libs if libs else "")
    return env


_loaded: dict[str, Any] = {}


def import_flux(inst: FluxInstall) -> Any:
    """Import the ``flux`` Python bindings against ``inst``'s libraries; returns the module.

    Raises ImportError with the fix when they cannot be imported.
    """
    if "flux" in _loaded:
        return _loaded["flux"]
    for name in _LIBS:
        for path in sorted(glob.glob(os.path.join(inst.libdir, name + ".*"))):
            if os.path.islink(path) and glob.glob(path + ".*"):
                continue  # a soname link: the versioned file follows
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                pass
            break
    try:
        import flux
    except ImportError as wheel_exc:
        own = os.path.join(inst.libdir, "flux", f"python{sys.version_info[0]}."
                           f"{sys.version_info[1]}")
        if not os.path.isdir(os.path.join(own, "flux")):
            raise ImportError(
                "the Flux Python bindings cannot be imported here "
                f"({wheel_exc}); install them with `pip install 'rhapsody-lab[flux]'` "
                f"(flux-python=={FLUX_VERSION})") from wheel_exc
        sys.path.append(own)
        import flux
    import flux.job
    _loaded["flux"] = flux
    return flux
