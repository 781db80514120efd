"""The RPC being handled on this thread: what outbound calls take from it (docs/runtime-contract.md,
"Calls between services").

`IncomingCalls` (a server interceptor) remembers, for the thread handling an RPC, when that RPC's
deadline ends and the metadata it came with, while its handler runs (and, for a streaming handler,
while it produces each response). The client interceptors of every mesh channel read it through
`current()`: `OutboundDeadline` (deadlines.py) and `OutboundHeaders` (propagation.py).
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from mesh.runtime.interceptors import Behaviour, Continuation, Handler, replaced

__all__ = ["IncomingCall", "IncomingCalls", "current"]


@dataclasses.dataclass(frozen=True)
class IncomingCall:
    deadline: float | None  # absolute time.monotonic() at which the RPC must end; None: no deadline
    metadata: Sequence[tuple[str, str | bytes]]


_current: contextvars.ContextVar[IncomingCall | None] = contextvars.ContextVar("mesh_incoming_call", default=None)


def current() -> IncomingCall | None:
    """The RPC being handled on this thread (None: none, e.g. a background sweep)."""
    return _current.get()


def _incoming(context: grpc.ServicerContext) -> IncomingCall:
    left = context.time_remaining()
    # grpcio reports "no deadline" as a huge number of seconds
    deadline = None if left is None or left > 10**8 else time.monotonic() + left
    return IncomingCall(deadline, tuple(context.invocation_metadata() or ()))


def _scoped_unary(behaviour: Behaviour) -> Behaviour:
    def handle(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
        token = _current.set(_incoming(context))
        try:
            return behaviour(request_or_iterator, context)
        finally:
            _current.reset(token)
    return handle


def _scoped_stream(behaviour: Behaviour) -> Behaviour:
    def handle(request_or_iterator: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        call = _incoming(context)
        responses: Iterator[Any] = iter(())
        token = _current.set(call)
        try:
            responses = behaviour(request_or_iterator, context)
        finally:
            _current.reset(token)
        while True:  # a generator's body runs on each next(): the call holds there too
            token = _current.set(call)
            try:
                response = next(responses)
            except StopIteration:
                return
            finally:
                _current.reset(token)
            yield response
    return handle


class IncomingCalls(grpc.ServerInterceptor):
    def intercept_service(self, continuation: Continuation,
                          handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary:
            return replaced(handler, unary_unary=_scoped_unary(handler.unary_unary))
        if handler.stream_unary:
            return replaced(handler, stream_unary=_scoped_unary(handler.stream_unary))
        if handler.unary_stream:
            return replaced(handler, unary_stream=_scoped_stream(handler.unary_stream))
        assert handler.stream_stream is not None  # a handler has one of the four
        return replaced(handler, stream_stream=_scoped_stream(handler.stream_stream))
