"""Injected failures for demos and tests (docs/runtime-contract.md, "Injected failures").

`InjectedFailures` (a server interceptor on the business server only, never on the admin port's
services) makes every call wait MESH_INJECT_DELAY_MS before its handler runs, unless the call ends
first (the caller's deadline, or the caller cancelling), and then answers
MESH_INJECT_FAILURE_PERCENT of calls UNAVAILABLE. It raises ServiceError for ErrorInterceptor
(errors.py) to report, so it sits inside that one and its failures are reported as every other error.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

import grpc

from mesh.runtime.config import InstanceConfig
from mesh.runtime.errors import ServiceError
from mesh.runtime.interceptors import Behaviour, Continuation, Handler, replaced

__all__ = ["InjectedFailures", "injected_failures"]

log = logging.getLogger(__name__)


def injected_failures(config: InstanceConfig) -> list[grpc.ServerInterceptor]:
    """The interceptor MESH_INJECT_* ask for (none by default), said once at WARN."""
    if not (config.inject_failure_percent or config.inject_delay_ms):
        return []
    log.warning("injecting failures: MESH_INJECT_FAILURE_PERCENT=%d, MESH_INJECT_DELAY_MS=%d",
                config.inject_failure_percent, config.inject_delay_ms)
    return [InjectedFailures(config.inject_failure_percent, config.inject_delay_ms)]


class InjectedFailures(grpc.ServerInterceptor):
    def __init__(self, failure_percent: int, delay_ms: int) -> None:
        self._percent = failure_percent
        self._delay = delay_ms / 1000

    def _inject(self, context: grpc.ServicerContext) -> None:
        if self._delay:
            ended = threading.Event()  # set when the call ends: its deadline, or the caller cancelling
            if not context.add_callback(ended.set) or ended.wait(self._delay):
                # The caller already has its status; this only keeps the handler from running.
                raise ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED if context.time_remaining() <= 0
                                   else grpc.StatusCode.CANCELLED, "the call ended during the injected delay")
        if random.randrange(100) < self._percent:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, f"injected failure (MESH_INJECT_FAILURE_PERCENT={self._percent})")

    def _guarded(self, behaviour: Behaviour) -> Behaviour:
        def handle(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
            self._inject(context)
            return behaviour(request_or_iterator, context)
        return handle

    def intercept_service(self, continuation: Continuation,
                          handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        kinds = ("unary_unary", "stream_unary", "unary_stream", "stream_stream")
        return replaced(handler, **{kind: self._guarded(getattr(handler, kind)) for kind in kinds if getattr(handler, kind)})
