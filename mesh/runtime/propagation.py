"""Routing headers travel with the call (docs/runtime-contract.md, "Calls between services").

`OutboundHeaders` (a client interceptor on every mesh channel) gives each call the values of every
header `MESH_PROPAGATE_HEADERS` lists that the RPC being handled on this thread came with
(incoming.py remembers its metadata), unless the call sets that header itself: its own value wins.
A call made outside any RPC gets none.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from mesh.runtime import incoming
from mesh.runtime.interceptors import CallDetailsInterceptor, replaced

__all__ = ["OutboundHeaders", "propagated_headers"]


def propagated_headers(names: Sequence[str]) -> dict[str, list[str | bytes]]:
    """The headers of `names` the incoming RPC on this thread came with, each with its values in order."""
    call = incoming.current()
    found: dict[str, list[str | bytes]] = {}
    for key, value in call.metadata if call is not None else ():
        if key in names:
            found.setdefault(key, []).append(value)
    return found


class OutboundHeaders(CallDetailsInterceptor):
    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        own = tuple(details.metadata or ())
        set_by_call = {key for key, _ in own}
        added = tuple((name, value) for name, values in propagated_headers(self._names).items()
                      if name not in set_by_call for value in values)
        return replaced(details, metadata=own + added) if added else details
