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

__all__ = ["OutboundHeaders", "propagated_headers"]


def propagated_headers(names: Sequence[str]) -> dict[str, list[str]]:
    """The headers of `names` the incoming RPC on this thread came with, each with its values in order."""
    call = incoming.current()
    found: dict[str, list[str]] = {}
    for key, value in call.metadata if call is not None else ():
        if key in names:
            found.setdefault(key, []).append(value)
    return found


class OutboundHeaders(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                      grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        own = tuple(details.metadata or ())
        set_by_call = {key for key, _ in own}
        added = tuple((name, value) for name, values in propagated_headers(self._names).items()
                      if name not in set_by_call for value in values)
        return details._replace(metadata=own + added) if added else details

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)
