"""The flux-core install the Flux tests use, or a module-level skip saying how to get one."""

from __future__ import annotations

import pytest

from rhapsody_lab.backends._flux_env import FluxInstall, find_install, import_flux, missing_reason


def require_flux() -> FluxInstall:
    """The install with importable bindings; skips the calling test module otherwise."""
    install = find_install()
    if install is None:
        pytest.skip(missing_reason(), allow_module_level=True)
    try:
        import_flux(install)
    except ImportError as exc:
        pytest.skip(str(exc), allow_module_level=True)
    return install
