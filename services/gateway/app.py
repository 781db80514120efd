"""The HTTP/JSON API (README, "Gateway HTTP API") on aiohttp, calling the shop over gRPC.

Each request gets a SERVER span; its trace id goes back in `X-Trace-Id` so that a user can
fetch the whole trace from Jaeger.

Before a handler runs, `_guarded` refuses what no handler should see: headers over
MAX_HEADER_BYTES (431), a bearer token that does not verify (401, RequestAuthentication's rule:
an invalid token is refused on every route), and a client over its rate (429 with
`Retry-After`). Placing and reading orders need a user (401 without a token); the user id (the
token's `sub`) goes to orders in the request, and orders answers only that user's orders.
Product browsing needs no token.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence

import grpc
from aiohttp import web
from google.protobuf import json_format
from multidict import CIMultiDictProxy
from opentelemetry import propagate, trace

from mesh.auth.tokens import TokenError, Verifier
from mesh.runtime import logs, tracing
from mesh.runtime.config import EnvReader, InstanceConfig
from mesh.runtime.errors import ServiceError, invalid_argument
from mesh.runtime.instance import CONFIG_ERROR_EXIT, Instance, load_config_or_exit, xds_target
from mesh.runtime.routes import AioRouteTimeouts
from services.gateway.errors import error_response, from_rpc_error, header_too_large, rate_limited, unauthenticated
from services.gateway.ratelimit import RateLimiter
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from shop.pricing.v1 import pricing_pb2, pricing_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_HTTP_PORT = 8080
MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_BYTES = 8 * 1024  # all header lines together: beyond, 431 in the gateway's error shape
# aiohttp's own limit on one header line or the request line (its plain-text 400 beyond): well
# above MAX_HEADER_BYTES, so that a request with a large header gets the clear 431 first.
MAX_LINE_BYTES = 4 * MAX_HEADER_BYTES
HTTP_LIMITS = {"max_line_size": MAX_LINE_BYTES, "max_field_size": MAX_LINE_BYTES}  # aiohttp's server options
CALL_TIMEOUT = 10.0
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")
TRACE_HEADER = "X-Trace-Id"
# The headers of the HTTP request being answered: those MESH_PROPAGATE_HEADERS lists go on to the
# gateway's calls as gRPC metadata, so that Istio routes on them (istio/scenarios/beta-header routes
# `x-user-tier: beta` to pricing v2), and the runtime's dial() passes them on from there.
_request_headers: contextvars.ContextVar[CIMultiDictProxy[str] | None] = contextvars.ContextVar("request_headers",
                                                                                             default=None)

tracer = trace.get_tracer(__name__)

# The gateway's own variables (README, "Gateway HTTP API"), with their defaults.
JWKS_FILE_ENV = "GATEWAY_JWKS_FILE"  # required: the issuer's public keys (the runner's .run/auth/jwks.json)
RATE_LIMIT_RPS_ENV = "GATEWAY_RATE_LIMIT_RPS"  # tokens a second per client; 0 turns rate limiting off
RATE_LIMIT_BURST_ENV = "GATEWAY_RATE_LIMIT_BURST"  # bucket size per client
DEFAULT_RATE_LIMIT_RPS = 200
DEFAULT_RATE_LIMIT_BURST = 400


@dataclasses.dataclass(frozen=True)
class GatewaySettings:
    jwks_file: str
    rate_limit_rps: int
    rate_limit_burst: int


def read_settings(reader: EnvReader) -> GatewaySettings:
    return GatewaySettings(
        jwks_file=reader.required(JWKS_FILE_ENV),
        rate_limit_rps=reader.integer(RATE_LIMIT_RPS_ENV, DEFAULT_RATE_LIMIT_RPS, minimum=0, maximum=1_000_000),
        rate_limit_burst=reader.integer(RATE_LIMIT_BURST_ENV, DEFAULT_RATE_LIMIT_BURST, minimum=1, maximum=1_000_000),
    )


def _json(message, status: int = 200, **extra) -> web.Response:
    body = json_format.MessageToDict(message, always_print_fields_with_no_presence=True) if message else {}
    body.update(extra)
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


class ForwardHeaders(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the HTTP request's headers of `names` to every call made while answering it."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = tuple(names)

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        headers = _request_headers.get()
        forwarded = [(name, value) for name in self._names for value in headers.getall(name, ())] if headers else []
        if forwarded:
            metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()), *forwarded)
            client_call_details = client_call_details._replace(metadata=metadata)
        return await continuation(client_call_details, request)


class Shop:
    """The gRPC stubs the gateway calls, each over `xds:///NAME:PORT` (MESH_XDS off: by DNS name)."""

    def __init__(self, config: InstanceConfig) -> None:
        credentials = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())

        def channel(name: str) -> grpc.aio.Channel:
            target = xds_target(config, name)
            if not config.xds:  # MESH_XDS off: plain gRPC to the Service; the sidecar routes
                return grpc.aio.insecure_channel(target, interceptors=[
                    ForwardHeaders(config.propagate_headers), *tracing.aio_traced_interceptors()])
            # route timeouts after the forwarded headers (routes match on them): grpcio's own are early
            return grpc.aio.secure_channel(target, credentials, interceptors=[
                ForwardHeaders(config.propagate_headers), AioRouteTimeouts(target),
                *tracing.aio_traced_interceptors()])

        self._channels = {name: channel(name) for name in ("catalog", "pricing", "inventory", "orders")}
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(self._channels["catalog"])
        self.pricing = pricing_pb2_grpc.PricingServiceStub(self._channels["pricing"])
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(self._channels["inventory"])
        self.orders = orders_pb2_grpc.OrderServiceStub(self._channels["orders"])

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))


SHOP = web.AppKey("shop", Shop)
VERIFIER = web.AppKey("verifier", Verifier)
LIMITER = web.AppKey("limiter", RateLimiter)  # absent: no rate limiting
USER = web.RequestKey("user", str)  # the token's subject; None for an anonymous request


def _user(request: web.Request) -> str:
    """The authenticated user, for the routes that need one (an anonymous request: 401)."""
    user = request[USER]
    if user is None:
        raise TokenError("TOKEN_MISSING", "this route needs a bearer token (Authorization: Bearer ...)")
    return user


# -- handlers ------------------------------------------------------------------------------------
async def list_products(request: web.Request) -> web.Response:
    shop = request.app[SHOP]
    page_size = request.query.get("pageSize", "0")
    if not page_size.isdigit():
        raise invalid_argument([("page_size", "must be a whole number")])
    reply = await shop.catalog.ListProducts(
        catalog_pb2.ListProductsRequest(page_size=int(page_size), page_token=request.query.get("pageToken", "")),
        timeout=CALL_TIMEOUT, wait_for_ready=True,
    )
    return _json(reply)


async def get_product(request: web.Request) -> web.Response:
    shop = request.app[SHOP]
    product_id = request.match_info["id"]
    currency = request.query.get("currency", "USD").upper()
    product, quote, stock = await asyncio.gather(
        shop.catalog.GetProduct(catalog_pb2.GetProductRequest(id=product_id), timeout=CALL_TIMEOUT, wait_for_ready=True),
        shop.pricing.GetQuote(
            pricing_pb2.GetQuoteRequest(items=[pricing_pb2.QuoteItem(product_id=product_id, quantity=1)], currency_code=currency),
            timeout=CALL_TIMEOUT, wait_for_ready=True,
        ),
        shop.inventory.GetStock(inventory_pb2.GetStockRequest(product_id=product_id), timeout=CALL_TIMEOUT, wait_for_ready=True),
        return_exceptions=True,
    )
    # The catalog owns products: its answer (e.g. NOT_FOUND) comes first.
    for outcome in (product, quote, stock):
        if isinstance(outcome, BaseException):
            raise outcome
    return web.Response(
        text=json.dumps(
            {
                "product": json_format.MessageToDict(product.product, always_print_fields_with_no_presence=True),
                "price": json_format.MessageToDict(quote.quote.total, always_print_fields_with_no_presence=True),
                "pricingVersion": quote.quote.pricing_version,
                "available": stock.available,
            }
        ),
        content_type="application/json",
    )


async def place_order(request: web.Request) -> web.Response:
    shop = request.app[SHOP]
    user = _user(request)
    key = request.headers.get("Idempotency-Key", "")
    violations = []
    if not IDEMPOTENCY_KEY.match(key):
        violations.append(("Idempotency-Key", "header required: 1-128 printable ASCII characters"))
    body = await _read_json_object(request)
    if "requestId" in body or "request_id" in body:
        violations.append(("requestId", "not allowed in the body; send the Idempotency-Key header"))
    if "userId" in body or "user_id" in body:
        violations.append(("userId", "not allowed in the body; it is the bearer token's subject"))
    order_request = orders_pb2.PlaceOrderRequest()
    try:
        json_format.ParseDict(body, order_request, ignore_unknown_fields=False)
    except json_format.ParseError as error:
        violations.append(("body", str(error)))
    if violations:
        raise invalid_argument(violations)
    order_request.request_id = key
    order_request.user_id = user
    reply = await shop.orders.PlaceOrder(order_request, timeout=CALL_TIMEOUT * 2, wait_for_ready=True)
    return _json(reply)


async def get_order(request: web.Request) -> web.Response:
    shop = request.app[SHOP]
    order_request = orders_pb2.GetOrderRequest(id=request.match_info["id"], user_id=_user(request))
    reply = await shop.orders.GetOrder(order_request, timeout=CALL_TIMEOUT, wait_for_ready=True)
    return _json(reply)


async def _read_json_object(request: web.Request) -> dict:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"body larger than {MAX_BODY_BYTES} bytes") from None
    try:
        body = json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise invalid_argument([("body", f"malformed JSON: {error}")]) from None
    if not isinstance(body, dict):
        raise invalid_argument([("body", "must be a JSON object")])
    return body


# -- middleware ------------------------------------------------------------------------------------
@web.middleware
async def traced(request: web.Request, handler) -> web.StreamResponse:
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    with tracer.start_as_current_span(
        f"{request.method} {route}",
        kind=trace.SpanKind.SERVER,
        context=propagate.extract(request.headers),
        attributes={"http.request.method": request.method, "url.path": request.path, "http.route": route},
    ) as span:
        _request_headers.set(request.headers)
        response = await _answer(request, handler)
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            span.set_status(trace.StatusCode.ERROR)
        response.headers[TRACE_HEADER] = format(span.get_span_context().trace_id, "032x")
        return response


async def _answer(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await _guarded(request, handler)
    except TokenError as error:
        return unauthenticated(error.reason, error.description, missing=error.reason == "TOKEN_MISSING")
    except ServiceError as error:
        too_large = error.message.startswith("body larger")
        return error_response(error, 413 if too_large else None)
    except grpc.aio.AioRpcError as error:
        return error_response(from_rpc_error(error))
    except web.HTTPException as error:  # aiohttp's own 404 / 405
        code = {404: grpc.StatusCode.NOT_FOUND, 405: grpc.StatusCode.UNIMPLEMENTED}.get(error.status,
                                                                                         grpc.StatusCode.INVALID_ARGUMENT)
        return error_response(ServiceError(code, f"{request.method} {request.path}: {error.reason}"), error.status)
    except Exception:
        log.exception("unexpected error")
        return error_response(ServiceError(grpc.StatusCode.INTERNAL, "internal error"))


async def _guarded(request: web.Request, handler) -> web.StreamResponse:
    header_bytes = sum(len(name) + len(value) + 4 for name, value in request.raw_headers)  # ": " and CRLF
    if header_bytes > MAX_HEADER_BYTES:
        return header_too_large(header_bytes, MAX_HEADER_BYTES)
    user, refused = None, None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":  # another scheme (or none) is no token: anonymous
        try:
            user = request.app[VERIFIER].verify(token.strip()).subject
        except TokenError as error:
            refused = error
    # Rate-limited before a bad token is refused, so that guessing tokens is rate-limited too.
    limiter = request.app.get(LIMITER)
    if limiter is not None:
        client = f"user:{user}" if user else f"addr:{request.remote}"
        wait = limiter.take(client)
        if wait:
            return rate_limited(wait)
    if refused is not None:
        log.info("token refused", extra={"reason": refused.reason, "remote": request.remote})
        raise refused
    request[USER] = user
    return await handler(request)


def make_app(shop: Shop, verifier: Verifier, limiter: RateLimiter | None = None) -> web.Application:
    app = web.Application(middlewares=[traced], client_max_size=MAX_BODY_BYTES)
    app[SHOP] = shop
    app[VERIFIER] = verifier
    if limiter is not None:
        app[LIMITER] = limiter
    app.router.add_get("/v1/products", list_products)
    app.router.add_get("/v1/products/{id}", get_product)
    app.router.add_post("/v1/orders", place_order)
    app.router.add_get("/v1/orders/{id}", get_order)
    return app


# -- process ---------------------------------------------------------------------------------------
async def serve(config: InstanceConfig, settings: GatewaySettings, verifier: Verifier) -> None:
    shop = Shop(config)
    limiter = RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst) if settings.rate_limit_rps else None
    runner = web.AppRunner(make_app(shop, verifier, limiter), access_log=None, shutdown_timeout=config.drain_timeout,
                           **HTTP_LIMITS)
    await runner.setup()
    port = config.port or DEFAULT_HTTP_PORT
    await web.TCPSite(runner, config.host, port).start()
    instance = Instance(config, [], port=port)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, instance.start)
    log.info("gateway listening", extra={"url": f"http://{config.host}:{port}"})
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down on signal")
    await loop.run_in_executor(None, instance.stop)  # NOT_SERVING, deregister
    await runner.cleanup()  # drains in-flight requests up to the drain timeout
    await shop.close()


def main() -> None:
    config, settings = load_config_or_exit("gateway", read_settings)
    try:
        verifier = Verifier.from_jwks_file(settings.jwks_file)
    except (OSError, ValueError) as error:  # JSONDecodeError and a JWKS without keys are ValueErrors
        print(f"gateway: invalid configuration: {JWKS_FILE_ENV}: {settings.jwks_file}: {error}", file=sys.stderr)
        sys.exit(CONFIG_ERROR_EXIT)
    logs.configure(config.service_name, config.instance_id, config.log_level)
    provider = tracing.setup_tracing(config)
    os.makedirs(config.data_dir, exist_ok=True)
    try:
        asyncio.run(serve(config, settings, verifier))
    finally:
        provider.shutdown()
