"""The caller's deadline bounds every outbound call (docs/runtime-contract.md, "Calls between services").

`OutboundDeadline` (a client interceptor on every mesh channel) gives each call the smaller of its
own timeout and what is left of the deadline of the RPC being handled on this thread (incoming.py
remembers it), or `MESH_CALL_TIMEOUT` when there is neither. A call made outside any RPC (a
background sweep) gets `MESH_CALL_TIMEOUT`. Given the channel's `RouteTimeouts`, the timeout of the
route the call takes (a VirtualService `timeout`) bounds it too: grpcio fires route timeouts early,
so the runtime applies them (mesh/runtime/routes.py).
"""

from __future__ import annotations

import time

import grpc

from mesh.runtime import incoming
from mesh.runtime.interceptors import CallDetailsInterceptor, replaced
from mesh.runtime.routes import RouteTimeouts

__all__ = ["OutboundDeadline", "remaining"]


def remaining() -> float | None:
    """Seconds left of the incoming RPC's deadline on this thread (None: none)."""
    call = incoming.current()
    return None if call is None or call.deadline is None else max(0.0, call.deadline - time.monotonic())


class OutboundDeadline(CallDetailsInterceptor):
    def __init__(self, default_timeout: float, routes: RouteTimeouts | None = None) -> None:
        self._default = default_timeout
        self._routes = routes

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        candidates = [t for t in (details.timeout, remaining()) if t is not None]
        timeout = min(candidates) if candidates else self._default
        if self._routes is not None:
            timeout = self._routes.bound(details.method, details.metadata, timeout)
        return replaced(details, timeout=timeout)
