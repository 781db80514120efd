"""gRPC statuses as HTTP errors: `{"error": {"code", "message", "details"}}`."""

from __future__ import annotations

import json
import re

import grpc
from aiohttp import web
from google.protobuf import json_format
from google.rpc import error_details_pb2

from mesh.runtime.errors import ServiceError, details_of
from services.gateway.ratelimit import retry_after

DOMAIN = "gateway.shop.local"
REALM = "polymesh"
# RFC 6750 3: what an error_description may hold (printable ASCII without `"` and `\`)
_DESCRIPTION_CHARS = frozenset(map(chr, range(0x20, 0x7f))) - {'"', "\\"}

HTTP_STATUS = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_SNAKE = re.compile(r"_([a-z])")


def json_field_path(proto_path: str) -> str:
    """`items[0].product_id` -> `items[0].productId`: the API speaks the proto3 JSON names."""
    return _SNAKE.sub(lambda m: m.group(1).upper(), proto_path)


def error_response(error: ServiceError, http_status: int | None = None) -> web.Response:
    message = json_message(error)  # before the details below are renamed in place
    details = []
    for detail in error.details:
        if isinstance(detail, error_details_pb2.BadRequest):
            for violation in detail.field_violations:
                violation.field = json_field_path(violation.field)
        rendered = json_format.MessageToDict(detail)
        details.append({"@type": f"type.googleapis.com/{detail.DESCRIPTOR.full_name}", **rendered})
    body = {"error": {"code": error.code.name, "message": message, "details": details}}
    return web.Response(
        status=http_status or HTTP_STATUS.get(error.code, 500),
        text=json.dumps(body),
        content_type="application/json",
    )


def json_message(error: ServiceError) -> str:
    message = error.message
    for detail in error.details:
        if isinstance(detail, error_details_pb2.BadRequest):
            for violation in detail.field_violations:
                message = message.replace(violation.field, json_field_path(violation.field))
    return message


def from_rpc_error(error: grpc.aio.AioRpcError) -> ServiceError:
    """A failed downstream call as the gateway's answer: same code and details, except that
    INTERNAL and UNKNOWN reveal nothing."""
    code = error.code()
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        return ServiceError(grpc.StatusCode.INTERNAL, "internal error")
    return ServiceError(code, error.details() or code.name.lower(), details_of(error))


def unauthenticated(reason: str, description: str, *, missing: bool = False) -> web.Response:
    """401 with an RFC 6750 challenge: `Bearer realm="polymesh"` alone when the request had no
    token (RFC 6750 3.1: no error code then), with `error="invalid_token"` and a description
    when it had one that does not verify. The body is the usual error, reason in ErrorInfo."""
    error = ServiceError(grpc.StatusCode.UNAUTHENTICATED, description,
                         [error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN)])
    response = error_response(error)
    challenge = f'Bearer realm="{REALM}"'
    if not missing:
        safe = "".join(c if c in _DESCRIPTION_CHARS else "?" for c in description)
        challenge += f', error="invalid_token", error_description="{safe}"'
    response.headers["WWW-Authenticate"] = challenge
    return response


def rate_limited(wait: float) -> web.Response:
    """429 with `Retry-After` in whole seconds (rounded up: the client's next try gets a token)."""
    seconds = retry_after(wait)
    error = ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"rate limit exceeded: retry after {seconds} s",
                         [error_details_pb2.ErrorInfo(reason="RATE_LIMITED", domain=DOMAIN,
                                                      metadata={"retry_after_seconds": str(seconds)})])
    response = error_response(error)
    response.headers["Retry-After"] = str(seconds)
    return response


def header_too_large(size: int, limit: int) -> web.Response:
    """431 Request Header Fields Too Large (RFC 6585)."""
    error = ServiceError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"request headers are {size} bytes, more than the {limit} allowed",
                         [error_details_pb2.ErrorInfo(reason="HEADERS_TOO_LARGE", domain=DOMAIN,
                                                      metadata={"limit_bytes": str(limit)})])
    return error_response(error, 431)
