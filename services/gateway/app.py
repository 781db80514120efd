"""The HTTP/JSON API (README, "Gateway HTTP API") on aiohttp, calling the shop over gRPC.

Each request gets a SERVER span; its trace id goes back in `X-Trace-Id` so that a user can
fetch the whole trace from Jaeger.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import re
import signal
from collections.abc import Sequence

import grpc
from aiohttp import web
from google.protobuf import json_format
from multidict import CIMultiDictProxy
from opentelemetry import propagate, trace

from mesh.runtime import logs, tracing
from mesh.runtime.config import InstanceConfig
from mesh.runtime.errors import ServiceError, invalid_argument
from mesh.runtime.instance import Instance, load_config_or_exit, xds_target
from mesh.runtime.routes import AioRouteTimeouts
from services.gateway.errors import error_response, from_rpc_error
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from shop.pricing.v1 import pricing_pb2, pricing_pb2_grpc

log = logging.getLogger(__name__)

DEFAULT_HTTP_PORT = 8080
MAX_BODY_BYTES = 64 * 1024
CALL_TIMEOUT = 10.0
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")
TRACE_HEADER = "X-Trace-Id"
# The headers of the HTTP request being answered: those MESH_PROPAGATE_HEADERS lists go on to the
# gateway's calls as gRPC metadata, so that Istio routes on them (istio/scenarios/beta-header routes
# `x-user-tier: beta` to pricing v2), and the runtime's dial() passes them on from there.
_request_headers: contextvars.ContextVar[CIMultiDictProxy[str] | None] = contextvars.ContextVar("request_headers",
                                                                                             default=None)

tracer = trace.get_tracer(__name__)


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
    """The gRPC stubs the gateway calls, each over `xds:///NAME:PORT`."""

    def __init__(self, config: InstanceConfig) -> None:
        credentials = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())
        # route timeouts after the forwarded headers (routes match on them): grpcio's own are early
        self._channels = {
            name: grpc.aio.secure_channel(xds_target(config, name), credentials, interceptors=[
                ForwardHeaders(config.propagate_headers), AioRouteTimeouts(xds_target(config, name)),
                *tracing.aio_traced_interceptors()])
            for name in ("catalog", "pricing", "inventory", "orders")
        }
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(self._channels["catalog"])
        self.pricing = pricing_pb2_grpc.PricingServiceStub(self._channels["pricing"])
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(self._channels["inventory"])
        self.orders = orders_pb2_grpc.OrderServiceStub(self._channels["orders"])

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))


SHOP = web.AppKey("shop", Shop)


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
    key = request.headers.get("Idempotency-Key", "")
    violations = []
    if not IDEMPOTENCY_KEY.match(key):
        violations.append(("Idempotency-Key", "header required: 1-128 printable ASCII characters"))
    body = await _read_json_object(request)
    if "requestId" in body or "request_id" in body:
        violations.append(("requestId", "not allowed in the body; send the Idempotency-Key header"))
    order_request = orders_pb2.PlaceOrderRequest()
    try:
        json_format.ParseDict(body, order_request, ignore_unknown_fields=False)
    except json_format.ParseError as error:
        violations.append(("body", str(error)))
    if violations:
        raise invalid_argument(violations)
    order_request.request_id = key
    reply = await shop.orders.PlaceOrder(order_request, timeout=CALL_TIMEOUT * 2, wait_for_ready=True)
    return _json(reply)


async def get_order(request: web.Request) -> web.Response:
    shop = request.app[SHOP]
    reply = await shop.orders.GetOrder(orders_pb2.GetOrderRequest(id=request.match_info["id"]), timeout=CALL_TIMEOUT, wait_for_ready=True)
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
        return await handler(request)
    except ServiceError as error:
        too_large = error.message.startswith("body larger")
        return error_response(error, 413 if too_large else None)
    except grpc.aio.AioRpcError as error:
        return error_response(from_rpc_error(error))
    except web.HTTPException as error:  # aiohttp's own 404 / 405
        code = {404: grpc.StatusCode.NOT_FOUND, 405: grpc.StatusCode.UNIMPLEMENTED}.get(error.status, grpc.StatusCode.INVALID_ARGUMENT)
        return error_response(ServiceError(code, f"{request.method} {request.path}: {error.reason}"), error.status)
    except Exception:
        log.exception("unexpected error")
        return error_response(ServiceError(grpc.StatusCode.INTERNAL, "internal error"))


def make_app(shop: Shop) -> web.Application:
    app = web.Application(middlewares=[traced], client_max_size=MAX_BODY_BYTES)
    app[SHOP] = shop
    app.router.add_get("/v1/products", list_products)
    app.router.add_get("/v1/products/{id}", get_product)
    app.router.add_post("/v1/orders", place_order)
    app.router.add_get("/v1/orders/{id}", get_order)
    return app


# -- process ---------------------------------------------------------------------------------------
async def serve(config: InstanceConfig) -> None:
    shop = Shop(config)
    runner = web.AppRunner(make_app(shop), access_log=None, shutdown_timeout=config.drain_timeout)
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
    config, _ = load_config_or_exit("gateway")
    logs.configure(config.service_name, config.instance_id, config.log_level)
    provider = tracing.setup_tracing(config)
    os.makedirs(config.data_dir, exist_ok=True)
    try:
        asyncio.run(serve(config))
    finally:
        provider.shutdown()
