"""End to end through the gateway: what a user sees with curl, and what a crash leaves behind."""

from __future__ import annotations

import decimal
import sqlite3
import uuid

import pytest

from mesh.runner import topology

ORDER = {"customerId": "cust-1", "currency": "EUR", "items": [{"productId": "sku-kettle", "quantity": 1}],
         "payment": {"cardToken": "tok_visa"}}


def money(m: dict) -> decimal.Decimal:
    return decimal.Decimal(int(m.get("units", "0"))) + decimal.Decimal(m.get("nanos", 0)) / 10**9


def available(http, product_id: str) -> int:
    reply = http.get(f"/v1/products/{product_id}")
    assert reply.status_code == 200, reply.text
    return reply.json()["available"]


def order(http, body=None, key=None):
    return http.post("/v1/orders", json=body or ORDER, headers={"Idempotency-Key": key or uuid.uuid4().hex})


def ledger(mesh, sql: str, *args):
    with sqlite3.connect(mesh.run_dir / "data" / "payments.db") as db:
        return db.execute(sql, args).fetchall()


def test_up_printed_every_instance_healthy_and_the_addresses(mesh):
    for instance in (i.name for s in topology.SERVICES for i in s.instances):
        line = next(row for row in mesh.up_output.splitlines() if row.startswith(instance + " "))
        assert line.rstrip().endswith("passing"), line
    for label in ("gateway", "consul UI", "jaeger query API"):
        assert label in mesh.up_output


def test_products_page_through_the_whole_catalog(http):
    seen, token = [], ""
    while True:
        reply = http.get("/v1/products", params={"pageSize": 5, "pageToken": token})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        seen += [p["id"] for p in body["products"]]
        assert all(p["priceUsd"]["currencyCode"] == "USD" for p in body["products"])
        token = body["nextPageToken"]
        if not token:
            break
    assert len(seen) == len(set(seen)) == 12


def test_a_product_in_eur_from_both_pricing_versions(http):
    prices = {}
    for _ in range(40):
        reply = http.get("/v1/products/sku-grinder", params={"currency": "EUR"})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["product"]["id"] == "sku-grinder" and body["price"]["currencyCode"] == "EUR"
        assert isinstance(body["available"], int)
        prices[body["pricingVersion"]] = money(body["price"])
        if len(prices) == 2:
            break
    assert set(prices) == {"v1", "v2"}, f"only {set(prices)} answered in 40 calls"
    # v2's 10% promotion, rounded to cents.
    assert prices["v2"] == (prices["v1"] * decimal.Decimal("0.9")).quantize(decimal.Decimal("0.01"), decimal.ROUND_HALF_UP)


def test_an_order_is_confirmed_readable_and_takes_stock(http):
    before = available(http, "sku-kettle")
    reply = order(http)
    assert reply.status_code == 200, reply.text
    placed = reply.json()["order"]
    assert placed["status"] == "ORDER_STATUS_CONFIRMED" and placed["total"]["currencyCode"] == "EUR"
    assert money(placed["total"]) > 0
    fetched = http.get(f"/v1/orders/{placed['id']}")
    assert fetched.status_code == 200 and fetched.json()["order"]["id"] == placed["id"]
    assert available(http, "sku-kettle") == before - 1


def test_a_repeated_idempotency_key_gives_the_same_order_and_reserves_once(http, mesh):
    key = uuid.uuid4().hex
    before = available(http, "sku-scale")
    body = {**ORDER, "items": [{"productId": "sku-scale", "quantity": 2}]}
    first, second = order(http, body, key), order(http, body, key)
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["order"]["id"] == second.json()["order"]["id"]
    assert available(http, "sku-scale") == before - 2
    order_id = first.json()["order"]["id"]
    assert ledger(mesh, "SELECT status FROM charges WHERE order_id = ?", order_id) == [(1,)]  # one CAPTURED
    reused = order(http, {**body, "customerId": "someone-else"}, key)
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "ALREADY_EXISTS"


def test_a_declined_payment_is_412_and_leaves_stock_unchanged(http, mesh):
    before = available(http, "sku-tamper")
    reply = order(http, {**ORDER, "items": [{"productId": "sku-tamper", "quantity": 1}],
                         "payment": {"cardToken": "tok_declined"}})
    assert reply.status_code == 412, reply.text
    error = reply.json()["error"]
    assert error["code"] == "FAILED_PRECONDITION"
    assert any(d.get("reason") == "CARD_DECLINED" for d in error["details"])
    assert available(http, "sku-tamper") == before
    assert ledger(mesh, "SELECT COUNT(*) FROM charges WHERE status = 1 AND card_token = 'tok_declined'") == [(0,)]


MILK = [{"productId": "sku-milk-jug", "quantity": 1}]
BAD_ORDERS = {  # body, HTTP status, the field named in details, the message (fields as the client wrote them)
    "quantity-zero": ({**ORDER, "items": [{"productId": "sku-milk-jug", "quantity": 0}]}, 400, "items[0].quantity",
                      "invalid request: items[0].quantity: must be between 1 and 1000"),
    "unknown-product": ({**ORDER, "items": [{"productId": "sku-nope", "quantity": 1}]}, 400, "items[0].productId",
                        "invalid request: items[0].productId: unknown product"),
    "unknown-currency": ({**ORDER, "currency": "XYZ", "items": MILK}, 400, "currency", None),
    "no-card-token": ({**ORDER, "items": MILK, "payment": {}}, 400, "payment.cardToken",
                      "invalid request: payment.cardToken: required"),
    "unknown-field": ({**ORDER, "coupon": "FREE"}, 400, "body", None),
}


@pytest.mark.parametrize("name", BAD_ORDERS)
def test_bad_orders_are_4xx_with_the_field_and_take_nothing(http, mesh, name):
    body, status, field, message = BAD_ORDERS[name]
    captured_before = ledger(mesh, "SELECT COUNT(*) FROM charges WHERE status = 1")
    stock_before = available(http, "sku-milk-jug")
    reply = order(http, body)
    assert reply.status_code == status, reply.text
    violations = [v["field"] for d in reply.json()["error"]["details"] for v in d.get("fieldViolations", [])]
    assert field in violations, violations
    if message is not None:
        assert reply.json()["error"]["message"] == message
    assert available(http, "sku-milk-jug") == stock_before
    assert ledger(mesh, "SELECT COUNT(*) FROM charges WHERE status = 1") == captured_before


def test_malformed_missing_key_and_oversized_are_4xx(http):
    assert http.post("/v1/orders", content=b"{oops", headers={"Idempotency-Key": "k1"}).status_code == 400
    assert http.post("/v1/orders", json=ORDER).status_code == 400
    big = http.post("/v1/orders", content=b"{" + b" " * 200_000 + b"}", headers={"Idempotency-Key": "k2"})
    assert big.status_code == 413
    assert http.get("/v1/products/sku-nope").status_code == 404
    assert http.get("/v1/products/sku-kettle", params={"currency": "XYZ"}).status_code == 400
    assert http.get("/v1/orders/ord_nope").status_code == 404
