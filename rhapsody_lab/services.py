"""Services: long-running processes beside short tasks; see ``rhapsody_lab.api.services``.

The implementation is part of the engine (standard library only); this module keeps the
public name ``rhapsody_lab.services``.
"""

from .api.http_check import http_get
from .api.service_set import ServiceSet
from .api.services import Service, free_port, resolve_placement

__all__ = ["Service", "ServiceSet", "free_port", "http_get", "resolve_placement"]
