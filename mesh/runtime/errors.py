"""Domain errors and their mapping to canonical gRPC codes with google.rpc details.

Servicers raise `ServiceError` (via the helpers below); `ErrorInterceptor` turns it into a
status with details in `grpc-status-details-bin`, and turns anything unexpected into INTERNAL
"internal error" while logging the exception with the trace id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import grpc
from google.protobuf import any_pb2, message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from mesh.runtime import core_experiments
from mesh.runtime.interceptors import Behaviour, Continuation, Handler, replaced

__all__ = [
    "ErrorInterceptor",
    "ServiceError",
    "already_exists",
    "details_of",
    "failed_precondition",
    "invalid_argument",
    "not_found",
    "not_found_ids",
    "unpack_details",
]

log = logging.getLogger(__name__)

PASS_THROUGH = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
                          grpc.StatusCode.CANCELLED})
INTERNAL_MESSAGE = "internal error"


class ServiceError(Exception):
    def __init__(self, code: grpc.StatusCode, message_text: str, details: Iterable[message.Message] = ()) -> None:
        super().__init__(message_text)
        self.code = code
        self.message = message_text
        self.details = list(details)

    def to_status_proto(self) -> status_pb2.Status:
        packed = []
        for detail in self.details:
            holder = any_pb2.Any()
            holder.Pack(detail)
            packed.append(holder)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)

    def to_status(self) -> grpc.Status:
        return rpc_status.to_status(self.to_status_proto())

    @classmethod
    def from_status_proto(cls, status: status_pb2.Status) -> ServiceError:
        code = next(c for c in grpc.StatusCode if c.value[0] == status.code)
        return cls(code, status.message, unpack_details(status))


def invalid_argument(violations: Iterable[tuple[str, str]], message_text: str = "invalid request") -> ServiceError:
    request = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations]
    )
    summary = "; ".join(f"{v.field}: {v.description}" for v in request.field_violations)
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{message_text}: {summary}", [request])


def _info(reason: str, domain: str, metadata: Mapping[str, str] | None) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata={k: str(v) for k, v in (metadata or {}).items()})


RESOURCE_IDS = "resource_ids"  # NOT_FOUND's one metadata key: the ids not found, comma-separated


def not_found(message_text: str, reason: str, domain: str, resource_ids: Iterable[str]) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message_text,
                        [_info(reason, domain, {RESOURCE_IDS: ",".join(resource_ids)})])


def not_found_ids(error: grpc.RpcError) -> list[str]:
    """The ids a downstream NOT_FOUND names (docs/runtime-contract.md, "Errors")."""
    for detail in details_of(error):
        if isinstance(detail, error_details_pb2.ErrorInfo) and detail.metadata.get(RESOURCE_IDS):
            return str(detail.metadata[RESOURCE_IDS]).split(",")
    return []


def failed_precondition(message_text: str, reason: str, domain: str, metadata: Mapping[str, str] | None = None) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, message_text, [_info(reason, domain, metadata)])


def already_exists(message_text: str, reason: str, domain: str, metadata: Mapping[str, str] | None = None) -> ServiceError:
    return ServiceError(grpc.StatusCode.ALREADY_EXISTS, message_text, [_info(reason, domain, metadata)])


KNOWN_DETAILS = {
    kind.DESCRIPTOR.full_name: kind
    for kind in (error_details_pb2.BadRequest, error_details_pb2.ErrorInfo, error_details_pb2.ResourceInfo)
}


def unpack_details(status: status_pb2.Status) -> list[message.Message]:
    """The google.rpc details of a status, unpacked (unknown types skipped)."""
    out = []
    for holder in status.details:
        kind = KNOWN_DETAILS.get(holder.TypeName())
        if kind is not None:
            detail = kind()
            holder.Unpack(detail)
            out.append(detail)
    return out


def details_of(error: grpc.RpcError) -> list[message.Message]:
    """The google.rpc details carried by a failed call (sync or asyncio)."""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    # (key, value) pairs: the stubs' _Metadatum (.key, .value) is not what grpcio returns
    for key, value in cast(Sequence[tuple[str, Any]], trailing or ()):
        if key == "grpc-status-details-bin":
            return unpack_details(status_pb2.Status.FromString(value))
    return []


class _NoMessage:
    """Returned with a non-OK status when headers must go first: serialized as nothing."""


_NO_MESSAGE = _NoMessage()


def _fail(context: grpc.ServicerContext, status: grpc.Status) -> _NoMessage:
    """End the call with `status`. Normally a Trailers-Only response (no headers before the
    status), as every gRPC server answers an error: the caller's retry policy may then retry it
    (a call is committed once headers arrive, gRFC A6). grpcio 1.85's xDS-enabled server aborts
    the process on a Trailers-Only response unless a core experiment is off
    (`mesh.runtime.core_experiments`); when the runtime could not turn it off in time, the status
    goes after headers and an empty message instead, which never crashes but is never retried."""
    if core_experiments.TRAILERS_ONLY:
        context.abort_with_status(status)  # raises; grpcio sends the status alone
    context.set_trailing_metadata(status.trailing_metadata or ())
    context.set_code(status.code)
    context.set_details(status.details)
    return _NO_MESSAGE


def _status_of(error: Exception, context: grpc.ServicerContext, method: str) -> grpc.Status | None:
    """What the caller gets for an exception a handler raised (None: keep a status already set)."""
    if isinstance(error, ServiceError):
        return error.to_status()
    if isinstance(error, grpc.RpcError):
        # A downstream call failed in a way the servicer did not handle: transient codes pass
        # through so that callers may retry; the rest is our fault.
        code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
        log.error("downstream call failed in %s: %s %s", method, code, getattr(error, "details", lambda: "")())
        if code in PASS_THROUGH:
            return ServiceError(code, error.details() or "").to_status()
        return ServiceError(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE).to_status()
    if context.code() not in (None, grpc.StatusCode.OK):  # type: ignore[attr-defined]  # grpcio has it; its stubs lack it
        return None  # context.abort() set the status already; keep it
    log.error("unexpected error in %s", method, exc_info=error)
    return ServiceError(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE).to_status()


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps exceptions raised by servicer methods, unary or streaming, to gRPC statuses."""

    def intercept_service(self, continuation: Continuation,
                          handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        serialize = handler.response_serializer

        def unary(behaviour: Behaviour) -> Behaviour:
            def guarded(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return behaviour(request, context)
                except Exception as error:  # every error becomes a status
                    status = _status_of(error, context, method)
                    if status is None:  # context.abort() set the status: grpcio reports it
                        if core_experiments.TRAILERS_ONLY:
                            raise
                        return _NO_MESSAGE
                    return _fail(context, status)
            return guarded

        def streaming(behaviour: Behaviour) -> Behaviour:
            def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                answered = False
                try:
                    for response in behaviour(request, context):
                        answered = True
                        yield response
                except Exception as error:  # every error becomes a status
                    status = _status_of(error, context, method)
                    if core_experiments.TRAILERS_ONLY:
                        if status is None:
                            raise  # context.abort() set the status: grpcio reports it
                        _fail(context, status)  # raises
                    if status is not None:
                        _fail(context, status)
                if not answered and not core_experiments.TRAILERS_ONLY and context.is_active():
                    # Without the core experiment off, grpcio 1.85's xDS-enabled server kills the
                    # process (see _fail) when a stream ends, OK or not, with nothing sent before
                    # its status.
                    context.send_initial_metadata(())
            return guarded

        wrapped = {
            "unary_unary": handler.unary_unary and unary(handler.unary_unary),
            "stream_unary": handler.stream_unary and unary(handler.stream_unary),
            "unary_stream": handler.unary_stream and streaming(handler.unary_stream),
            "stream_stream": handler.stream_stream and streaming(handler.stream_stream),
        }
        return replaced(
            handler, **{kind: behaviour for kind, behaviour in wrapped.items() if behaviour},
            response_serializer=lambda message: b"" if message is _NO_MESSAGE else serialize(message) if serialize else message,
        )
