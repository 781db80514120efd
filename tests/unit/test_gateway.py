"""The gateway's HTTP contract: status codes, error bodies, X-Trace-Id, and bad input that
never reaches the shop. The shop behind it is a recording fake here; the end-to-end tests run
the real one."""

import asyncio
import json
import time

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer
from google.rpc import error_details_pb2
from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from mesh.auth.tokens import SigningKey, Verifier, mint
from mesh.runtime.errors import ServiceError, invalid_argument
from services.gateway.app import HTTP_LIMITS, MAX_BODY_BYTES, ForwardHeaders, _request_headers, make_app
from shop.orders.v1 import orders_pb2

trace.set_tracer_provider(TracerProvider())
GOOD = {"customerId": "c1", "currency": "EUR", "items": [{"productId": "sku-kettle", "quantity": 1}],
        "payment": {"cardToken": "tok_visa"}}


KEY = SigningKey.generate()
VERIFIER = Verifier.from_jwks(KEY.jwks())


def auth(user="alice"):
    return {"Authorization": f"Bearer {mint(KEY, user)}"}


class RecordingOrders:
    def __init__(self):
        self.calls = []

    async def PlaceOrder(self, request, timeout=None, wait_for_ready=None):
        self.calls.append(request)
        return orders_pb2.PlaceOrderResponse(order=orders_pb2.Order(id="ord_1", status=orders_pb2.ORDER_STATUS_CONFIRMED))


class FakeShop:
    def __init__(self):
        self.orders = RecordingOrders()


def post(body, headers=None, raw=None):
    shop = FakeShop()

    async def go():
        async with TestClient(TestServer(make_app(shop, VERIFIER))) as client:
            data = raw if raw is not None else json.dumps(body)
            response = await client.post("/v1/orders", data=data, headers={**auth(), **(headers or {})})
            return response.status, dict(response.headers), await response.json()

    status, headers_out, payload = asyncio.run(go())
    return status, headers_out, payload, shop.orders.calls


def fields(payload):
    return {v["field"] for d in payload["error"]["details"] for v in d.get("fieldViolations", [])}


def test_a_good_order_is_forwarded_with_the_idempotency_key_as_request_id():
    status, headers, payload, calls = post(GOOD, {"Idempotency-Key": "k-1"})
    assert status == 200 and payload["order"]["id"] == "ord_1"
    assert calls[0].request_id == "k-1" and calls[0].items[0].product_id == "sku-kettle"
    assert calls[0].user_id == "alice"  # the token's subject
    assert len(headers["X-Trace-Id"]) == 32


@pytest.mark.parametrize(
    "body,headers,raw,expected_fields,says",
    [
        (GOOD, {}, None, {"Idempotency-Key"}, "Idempotency-Key"),
        (None, {"Idempotency-Key": "k"}, b"{not json", {"body"}, "JSON"),
        ({**GOOD, "extra": 1}, {"Idempotency-Key": "k"}, None, {"body"}, "extra"),
        ({**GOOD, "requestId": "x"}, {"Idempotency-Key": "k"}, None, {"requestId"}, "requestId"),
        ({**GOOD, "userId": "bob"}, {"Idempotency-Key": "k"}, None, {"userId"}, "userId"),
        ([1, 2], {"Idempotency-Key": "k"}, None, {"body"}, "object"),
        ({**GOOD, "items": [{"productId": "a", "quantity": "many"}]}, {"Idempotency-Key": "k"}, None, {"body"}, "many"),
    ],
    ids=["missing-key", "malformed-json", "unknown-field", "request-id-in-body", "user-id-in-body", "not-an-object",
         "wrong-type"],
)
def test_bad_input_is_400_with_field_details_and_reaches_nothing(body, headers, raw, expected_fields, says):
    status, out_headers, payload, calls = post(body, headers, raw)
    assert status == 400 and payload["error"]["code"] == "INVALID_ARGUMENT"
    assert expected_fields <= fields(payload)
    assert says in payload["error"]["message"], payload["error"]["message"]
    assert calls == [] and "X-Trace-Id" in out_headers


def test_an_oversized_body_is_413_and_reaches_nothing():
    status, _, payload, calls = post(None, {"Idempotency-Key": "k"}, raw=b"{" + b" " * MAX_BODY_BYTES + b"}")
    assert status == 413 and payload["error"]["code"] == "INVALID_ARGUMENT" and calls == []


def test_unknown_route_is_a_json_404():
    shop = FakeShop()

    async def go():
        async with TestClient(TestServer(make_app(shop, VERIFIER))) as client:
            response = await client.get("/v1/nothing")
            return response.status, await response.json()

    status, payload = asyncio.run(go())
    assert status == 404 and payload["error"]["code"] == "NOT_FOUND"


def _rpc_error(error: ServiceError) -> grpc.aio.AioRpcError:
    """What a real grpc.aio stub raises when the peer answers with this status."""
    trailing = grpc.aio.Metadata(*error.to_status().trailing_metadata)
    return grpc.aio.AioRpcError(error.code, grpc.aio.Metadata(), trailing, details=error.message)


class FailingOrders:
    def __init__(self, error: ServiceError) -> None:
        self.error = error
        self.calls = []

    async def PlaceOrder(self, request, timeout=None, wait_for_ready=None):
        self.calls.append(request)
        raise _rpc_error(self.error)


def post_to_failing_orders(error: ServiceError):
    shop = FakeShop()
    shop.orders = FailingOrders(error)

    async def go():
        async with TestClient(TestServer(make_app(shop, VERIFIER))) as client:
            response = await client.post("/v1/orders", data=json.dumps(GOOD), headers={"Idempotency-Key": "k", **auth()})
            return response.status, await response.json()

    return asyncio.run(go())


def test_an_invalid_argument_from_orders_names_fields_as_the_client_wrote_them():
    status, payload = post_to_failing_orders(invalid_argument([("payment.card_token", "required"),
                                                               ("items[0].product_id", "unknown product")]))
    assert status == 400 and payload["error"]["code"] == "INVALID_ARGUMENT"
    assert payload["error"]["message"] == "invalid request: payment.cardToken: required; items[0].productId: unknown product"
    assert fields(payload) == {"payment.cardToken", "items[0].productId"}


@pytest.mark.parametrize("code,http_status", [
    (grpc.StatusCode.NOT_FOUND, 404), (grpc.StatusCode.ALREADY_EXISTS, 409),
    (grpc.StatusCode.FAILED_PRECONDITION, 412), (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (grpc.StatusCode.UNAVAILABLE, 503), (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
])
def test_a_downstream_status_keeps_its_code_message_and_reason(code, http_status):
    error = ServiceError(code, "the card was declined", [error_details_pb2.ErrorInfo(reason="CARD_DECLINED")])
    status, payload = post_to_failing_orders(error)
    assert status == http_status
    assert payload["error"] == {"code": code.name, "message": "the card was declined", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "CARD_DECLINED"}]}


def test_an_internal_error_downstream_reveals_nothing():
    status, payload = post_to_failing_orders(ServiceError(grpc.StatusCode.INTERNAL, "db at /var/lib/x is corrupt"))
    assert status == 500 and payload["error"] == {"code": "INTERNAL", "message": "internal error", "details": []}


def test_the_request_headers_meant_for_routing_go_on_to_the_grpc_calls():
    seen = []

    async def continuation(details, request):
        seen.append(tuple(details.metadata or ()))

    async def call(headers):
        _request_headers.set(CIMultiDictProxy(CIMultiDict(headers)))
        details = grpc.aio.ClientCallDetails("/shop.pricing.v1.PricingService/GetQuote", 5, None, None, None)
        await ForwardHeaders(("x-user-tier",)).intercept_unary_unary(continuation, details, None)

    asyncio.run(call({"X-User-Tier": "beta", "X-Canary": "yes"}))
    asyncio.run(call({"Accept": "application/json"}))
    assert seen == [(("x-user-tier", "beta"),), ()]


def call(method, path, headers=None, limiter=None, times=1):
    shop = FakeShop()

    async def go():
        server = TestServer(make_app(shop, VERIFIER, limiter))
        await server.start_server(**HTTP_LIMITS)  # the limits the gateway runs with
        async with TestClient(server) as client:
            out = []
            for _ in range(times):
                response = await client.request(method, path, headers=headers or {}, data=json.dumps(GOOD))
                out.append((response.status, dict(response.headers), await response.json()))
            return out

    return asyncio.run(go()), shop.orders.calls


def test_no_token_on_an_order_route_is_401_with_a_bare_bearer_challenge():
    [(status, headers, payload)], calls = call("POST", "/v1/orders", {"Idempotency-Key": "k"})
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="polymesh"'
    assert payload["error"]["code"] == "UNAUTHENTICATED" and payload["error"]["details"][0]["reason"] == "TOKEN_MISSING"
    assert calls == []


def test_a_bad_token_is_401_invalid_token_on_every_route_even_a_public_one():
    expired = mint(KEY, "alice", ttl=60, now=time.time() - 3600)
    for method, path in (("POST", "/v1/orders"), ("GET", "/v1/products")):
        [(status, headers, payload)], calls = call(method, path, {"Authorization": f"Bearer {expired}"})
        assert status == 401 and calls == []
        assert headers["WWW-Authenticate"] == ('Bearer realm="polymesh", error="invalid_token", '
                                               'error_description="token expired"')
        assert payload["error"]["details"][0]["reason"] == "TOKEN_EXPIRED"


def test_beyond_its_burst_a_client_gets_429_with_retry_after_and_others_do_not():
    from services.gateway.ratelimit import RateLimiter
    limiter = RateLimiter(rate=0.5, burst=2)
    answers, _ = call("GET", "/v1/nothing", auth("alice"), limiter, times=3)
    assert [a[0] for a in answers] == [404, 404, 429]
    assert answers[2][1]["Retry-After"] == "2" and answers[2][2]["error"]["code"] == "RESOURCE_EXHAUSTED"


def test_headers_over_the_limit_are_431_in_the_error_shape():
    from services.gateway.app import MAX_HEADER_BYTES
    [(status, _, payload)], calls = call("POST", "/v1/orders", {**auth(), "X-Big": "a" * MAX_HEADER_BYTES})
    assert status == 431 and payload["error"]["details"][0]["reason"] == "HEADERS_TOO_LARGE" and calls == []


def test_the_gateways_settings_are_checked_with_every_bad_variable_named():
    from mesh.runtime.config import ConfigError, EnvReader
    from services.gateway.app import DEFAULT_RATE_LIMIT_BURST, DEFAULT_RATE_LIMIT_RPS, read_settings
    reader = EnvReader({"GATEWAY_JWKS_FILE": "/run/auth/jwks.json"})
    settings = read_settings(reader)
    reader.finish()
    assert (settings.rate_limit_rps, settings.rate_limit_burst) == (DEFAULT_RATE_LIMIT_RPS, DEFAULT_RATE_LIMIT_BURST)
    reader = EnvReader({"GATEWAY_RATE_LIMIT_RPS": "fast", "GATEWAY_RATE_LIMIT_BURST": "0"})
    read_settings(reader)
    with pytest.raises(ConfigError) as caught:
        reader.finish()
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "GATEWAY_JWKS_FILE", "GATEWAY_RATE_LIMIT_RPS", "GATEWAY_RATE_LIMIT_BURST"]
