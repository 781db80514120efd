"""One base for the client interceptors that only rewrite a call's details (its metadata, its
timeout) before it goes out, for all four call shapes alike; and the types the server
interceptors share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeAlias, TypeVar, cast

import grpc

__all__ = ["Behaviour", "CallDetailsInterceptor", "Continuation", "Handler", "replaced"]

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Replaceable = TypeVar("_Replaceable")

# A servicer method as a server interceptor sees it, and what it wraps.
# (Strings: grpcio's classes are not generic at run time, only in its stubs.)
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Handler | None]"
Behaviour: TypeAlias = "Callable[[Any, grpc.ServicerContext], Any]"


def replaced(value: _Replaceable, **changes: object) -> _Replaceable:
    """A copy of grpcio's call details or method handler with `changes`: grpcio makes both
    namedtuples, which its stubs type as the abstract classes (no `_replace`)."""
    return cast(_Replaceable, cast(Any, value)._replace(**changes))


class CallDetailsInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                             grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Subclasses say how in `_details`; every call shape goes through it."""

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        raise NotImplementedError

    def intercept_unary_unary(self, continuation: Callable[[grpc.ClientCallDetails, _Request], _Response],
                              client_call_details: grpc.ClientCallDetails, request: _Request) -> _Response:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Callable[[grpc.ClientCallDetails, _Request], _Response],
                               client_call_details: grpc.ClientCallDetails, request: _Request) -> _Response:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation: Callable[[grpc.ClientCallDetails, Iterator[_Request]], _Response],
                               client_call_details: grpc.ClientCallDetails,
                               request_iterator: Iterator[_Request]) -> _Response:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation: Callable[[grpc.ClientCallDetails, Iterator[_Request]], _Response],
                                client_call_details: grpc.ClientCallDetails,
                                request_iterator: Iterator[_Request]) -> _Response:
        return continuation(self._details(client_call_details), request_iterator)
