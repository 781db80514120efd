"""The caller's deadline bounds every outbound call (docs/runtime-contract.md, "Calls between services").

`IncomingDeadline` (a server interceptor) remembers, for the thread handling an RPC, when that RPC's
deadline ends; `OutboundDeadline` (a client interceptor on every mesh channel) gives each call the
smaller of its own timeout and what is left of it, or `MESH_CALL_TIMEOUT` when there is neither.
A call made outside any RPC (a background sweep) gets `MESH_CALL_TIMEOUT`.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterator

import grpc

__all__ = ["IncomingDeadline", "OutboundDeadline", "remaining"]

# Absolute time.monotonic() at which the RPC being handled on this thread must end; None: no deadline.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("mesh_incoming_deadline", default=None)


def remaining() -> float | None:
    """Seconds left of the incoming RPC's deadline on this thread (None: none)."""
    deadline = _deadline.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _absolute(context: grpc.ServicerContext) -> float | None:
    left = context.time_remaining()
    # grpcio reports "no deadline" as a huge number of seconds
    return None if left is None or left > 10**8 else time.monotonic() + left


def _bound_unary(behaviour: Callable) -> Callable:
    def handle(request_or_iterator, context):
        token = _deadline.set(_absolute(context))
        try:
            return behaviour(request_or_iterator, context)
        finally:
            _deadline.reset(token)
    return handle


def _bound_stream(behaviour: Callable) -> Callable:
    def handle(request_or_iterator, context) -> Iterator:
        deadline = _absolute(context)
        responses = iter(())
        token = _deadline.set(deadline)
        try:
            responses = behaviour(request_or_iterator, context)
        finally:
            _deadline.reset(token)
        while True:  # a generator's body runs on each next(): the deadline holds there too
            token = _deadline.set(deadline)
            try:
                response = next(responses)
            except StopIteration:
                return
            finally:
                _deadline.reset(token)
            yield response
    return handle


class IncomingDeadline(grpc.ServerInterceptor):
    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary:
            return handler._replace(unary_unary=_bound_unary(handler.unary_unary))
        if handler.stream_unary:
            return handler._replace(stream_unary=_bound_unary(handler.stream_unary))
        if handler.unary_stream:
            return handler._replace(unary_stream=_bound_stream(handler.unary_stream))
        return handler._replace(stream_stream=_bound_stream(handler.stream_stream))


class OutboundDeadline(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                       grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    def __init__(self, default_timeout: float) -> None:
        self._default = default_timeout

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        candidates = [t for t in (details.timeout, remaining()) if t is not None]
        timeout = min(candidates) if candidates else self._default
        return details._replace(timeout=timeout)  # grpc.intercept_channel's details are a namedtuple

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

