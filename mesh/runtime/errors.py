"""Domain errors and their mapping to canonical gRPC codes with google.rpc details.

Servicers raise `ServiceError` (via the helpers below); `ErrorInterceptor` turns it into a
status with details in `grpc-status-details-bin`, and turns anything unexpected into INTERNAL
"internal error" while logging the exception with the trace id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import grpc
from google.protobuf import any_pb2, message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "ServiceError",
    "ErrorInterceptor",
    "invalid_argument",
    "not_found",
    "failed_precondition",
    "already_exists",
    "details_of",
    "unpack_details",
]

log = logging.getLogger(__name__)

PASS_THROUGH = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED})


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
    def from_status_proto(cls, status: status_pb2.Status) -> "ServiceError":
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


def not_found(message_text: str, reason: str, domain: str, metadata: Mapping[str, str] | None = None) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message_text, [_info(reason, domain, metadata)])


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
    for key, value in trailing or ():
        if key == "grpc-status-details-bin":
            return unpack_details(status_pb2.Status.FromString(value))
    return []


class _NoMessage:
    """Returned with a non-OK status: serialized as nothing; the client gets only the status."""


_NO_MESSAGE = _NoMessage()


def _fail(context: grpc.ServicerContext, status: grpc.Status) -> _NoMessage:
    # grpcio 1.85's xDS-enabled server kills the process ("pipe.h:85 Check failed:
    # has_value()") when a handler calls context.abort() or raises. Setting the status and
    # returning works on every server, so errors are reported this way.
    context.set_trailing_metadata(status.trailing_metadata or ())
    context.set_code(status.code)
    context.set_details(status.details)
    return _NO_MESSAGE


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps exceptions raised by unary servicer methods to gRPC statuses."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner, serialize = handler.unary_unary, handler.response_serializer
        method = handler_call_details.method

        def guarded(request, context):
            try:
                return inner(request, context)
            except ServiceError as error:
                return _fail(context, error.to_status())
            except grpc.RpcError as error:
                # A downstream call failed in a way the servicer did not handle: transient
                # codes pass through so that callers may retry; the rest is our fault.
                code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
                log.error("downstream call failed in %s: %s %s", method, code, getattr(error, "details", lambda: "")())
                if code in PASS_THROUGH:
                    return _fail(context, ServiceError(code, error.details() or "").to_status())
                return _fail(context, ServiceError(grpc.StatusCode.INTERNAL, "internal error").to_status())
            except Exception:
                if context.code() not in (None, grpc.StatusCode.OK):
                    return _NO_MESSAGE  # context.abort() set the status already; keep it
                log.exception("unexpected error in %s", method)
                return _fail(context, ServiceError(grpc.StatusCode.INTERNAL, "internal error").to_status())

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=lambda message: b"" if message is _NO_MESSAGE else serialize(message),
        )
