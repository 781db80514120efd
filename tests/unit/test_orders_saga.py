"""The PlaceOrder saga against real catalog and payments servicers and a recording inventory
and pricing (unit-test fakes: the end-to-end tests run the real Go and TypeScript services)."""

from __future__ import annotations

import threading
import types
from concurrent import futures

import grpc
import pytest
from google.type import money_pb2

from mesh.runtime.errors import details_of, invalid_argument
from services.catalog.servicer import CatalogServicer
from services.catalog.store import ProductStore
from services.orders.servicer import OrderServicer
from services.orders.store import OrderStore
from services.payments.ledger import Ledger
from services.payments.servicer import PaymentServicer
from shop.catalog.v1 import catalog_pb2_grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from shop.payments.v1 import payments_pb2_grpc
from shop.pricing.v1 import pricing_pb2, pricing_pb2_grpc

Status = orders_pb2.OrderStatus


class FakePricing(pricing_pb2_grpc.PricingServiceServicer):
    """Quotes 10 EUR a unit; `unavailable` makes the next N calls fail with UNAVAILABLE."""

    def __init__(self):
        self.unavailable = 0

    def GetQuote(self, request, context):
        if self.unavailable:
            self.unavailable -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "pricing restarting")
        if request.currency_code not in ("EUR", "USD"):
            raise invalid_argument([("currency_code", "unknown currency")])
        lines = [pricing_pb2.QuoteLine(product_id=i.product_id, quantity=i.quantity,
                                       unit_price=money_pb2.Money(currency_code=request.currency_code, units=10),
                                       line_total=money_pb2.Money(currency_code=request.currency_code, units=10 * i.quantity))
                 for i in request.items]
        total = money_pb2.Money(currency_code=request.currency_code, units=sum(line.line_total.units for line in lines))
        return pricing_pb2.GetQuoteResponse(quote=pricing_pb2.Quote(lines=lines, total=total, pricing_version="v1"))


class RecordingInventory(inventory_pb2_grpc.InventoryServiceServicer):
    """Holds reservations like the real one (idempotent, release tombstones) and records calls."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []
        self.state: dict[str, int] = {}
        self.lock = threading.Lock()
        self.failing = {"commit": 0, "release": 0}  # how many of the next calls fail UNAVAILABLE

    def _maybe_fail(self, what, context):
        if self.failing[what]:
            self.failing[what] -= 1
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{what} failed")

    def ReserveStock(self, request, context):
        with self.lock:
            self.calls.append(("reserve", request.reservation_id))
            status = self.state.setdefault(request.reservation_id, inventory_pb2.RESERVATION_STATUS_HELD)
        return inventory_pb2.ReserveStockResponse(reservation=inventory_pb2.Reservation(id=request.reservation_id, status=status))

    def ReleaseStock(self, request, context):
        with self.lock:
            self.calls.append(("release", request.reservation_id))
            self._maybe_fail("release", context)
            self.state[request.reservation_id] = inventory_pb2.RESERVATION_STATUS_RELEASED
        return inventory_pb2.ReleaseStockResponse()

    def CommitReservation(self, request, context):
        with self.lock:
            self.calls.append(("commit", request.reservation_id))
            self._maybe_fail("commit", context)
            self.state[request.reservation_id] = inventory_pb2.RESERVATION_STATUS_COMMITTED
        return inventory_pb2.CommitReservationResponse()

    def held(self) -> list[str]:
        return [rid for rid, s in self.state.items() if s != inventory_pb2.RESERVATION_STATUS_RELEASED]


@pytest.fixture
def shop(serve, tmp_path):
    pricing, inventory = FakePricing(), RecordingInventory()
    ledger = Ledger(str(tmp_path / "payments.db"))
    channel = serve(
        catalog_pb2_grpc.add_CatalogServiceServicer_to_server, CatalogServicer(ProductStore(str(tmp_path / "c.db"))),
        pricing_pb2_grpc.add_PricingServiceServicer_to_server, pricing,
        inventory_pb2_grpc.add_InventoryServiceServicer_to_server, inventory,
        payments_pb2_grpc.add_PaymentServiceServicer_to_server, PaymentServicer(ledger),
    )
    downstream = types.SimpleNamespace(
        catalog=catalog_pb2_grpc.CatalogServiceStub(channel), pricing=pricing_pb2_grpc.PricingServiceStub(channel),
        inventory=inventory_pb2_grpc.InventoryServiceStub(channel), payments=payments_pb2_grpc.PaymentServiceStub(channel))
    servicer = OrderServicer(OrderStore(str(tmp_path / "o.db")), downstream)
    orders = orders_pb2_grpc.OrderServiceStub(serve(orders_pb2_grpc.add_OrderServiceServicer_to_server, servicer))
    return types.SimpleNamespace(orders=orders, pricing=pricing, inventory=inventory, ledger=ledger, servicer=servicer)


def place(shop, key="k1", token="tok_visa", currency="EUR", product="sku-kettle", quantity=2, user="alice"):
    return shop.orders.PlaceOrder(orders_pb2.PlaceOrderRequest(
        request_id=key, user_id=user, customer_id="c1", currency=currency,
        items=[orders_pb2.LineItem(product_id=product, quantity=quantity)],
        payment=orders_pb2.Payment(card_token=token))).order


def charges(shop):
    return shop.ledger.connection().execute("SELECT id, status FROM charges ORDER BY id").fetchall()


def captured(shop):
    return [charge_id for charge_id, status in charges(shop) if status == 1]


def test_a_confirmed_order_reserves_charges_and_commits_once_under_its_id(shop):
    order = place(shop)
    assert order.status == Status.ORDER_STATUS_CONFIRMED and order.total.units == 20
    assert shop.inventory.calls == [("reserve", order.id), ("commit", order.id)]
    assert charges(shop) == [(order.id, 1)]  # CAPTURED
    again = place(shop)  # same key, same body
    assert again == order and len(shop.inventory.calls) == 2 and len(charges(shop)) == 1


def test_a_declined_card_undoes_the_reservation_and_a_retry_gets_the_same_error(shop):
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as caught:
            place(shop, key="declined", token="tok_declined")
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert details_of(caught.value)[0].reason == "CARD_DECLINED"
    assert shop.inventory.held() == []
    assert [c[0] for c in shop.inventory.calls] == ["reserve", "release"]  # the retry ran no saga


def test_unknown_product_and_currency_are_invalid_argument_on_the_request_fields(shop):
    with pytest.raises(grpc.RpcError) as caught:
        place(shop, key="p", product="sku-nope")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details_of(caught.value)[0].field_violations] == ["items[0].product_id"]
    with pytest.raises(grpc.RpcError) as caught:
        place(shop, key="c", currency="XYZ")
    assert [v.field for v in details_of(caught.value)[0].field_violations] == ["currency"]
    assert shop.inventory.held() == [] and captured(shop) == []


def test_after_a_transient_failure_a_retry_runs_a_fresh_attempt(shop):
    shop.pricing.unavailable = 1
    with pytest.raises(grpc.RpcError) as caught:
        place(shop, key="flaky")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    order = place(shop, key="flaky")
    assert order.status == Status.ORDER_STATUS_CONFIRMED
    assert ("reserve", f"{order.id}.1") in shop.inventory.calls and shop.inventory.held() == [f"{order.id}.1"]
    assert captured(shop) == [f"{order.id}.1"]


def test_the_same_key_for_a_different_order_is_already_exists(shop):
    place(shop, key="reused")
    with pytest.raises(grpc.RpcError) as caught:
        place(shop, key="reused", quantity=3)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_concurrent_duplicates_run_one_saga(shop):
    with futures.ThreadPoolExecutor(8) as pool:
        orders = list(pool.map(lambda _: place(shop, key="burst"), range(8)))
    assert len({o.id for o in orders}) == 1
    assert [c[0] for c in shop.inventory.calls] == ["reserve", "commit"] and len(charges(shop)) == 1


def test_bad_requests_name_every_field_and_take_nothing(shop):
    with pytest.raises(grpc.RpcError) as caught:
        shop.orders.PlaceOrder(orders_pb2.PlaceOrderRequest(items=[orders_pb2.LineItem(quantity=0)]))
    fields = {v.field for v in details_of(caught.value)[0].field_violations}
    assert fields == {"user_id", "request_id", "customer_id", "currency", "items[0].product_id", "items[0].quantity",
                      "payment.card_token"}
    assert shop.inventory.calls == [] and charges(shop) == []


def get(shop, order_id, user):
    return shop.orders.GetOrder(orders_pb2.GetOrderRequest(id=order_id, user_id=user)).order


def test_an_order_is_read_by_its_owner_only_and_another_users_reads_as_missing(shop):
    order = place(shop, user="alice")
    assert order.user_id == "alice" and get(shop, order.id, "alice") == order
    outcomes = []
    for order_id, user in ((order.id, "bob"), ("ord_nope", "bob")):
        with pytest.raises(grpc.RpcError) as caught:
            get(shop, order_id, user)
        outcomes.append((caught.value.code(), caught.value.details().replace(order_id, "ID")))
    assert outcomes[0] == outcomes[1] == (grpc.StatusCode.NOT_FOUND, "order 'ID' not found")


def test_without_a_user_orders_refuses_to_place_or_read_naming_the_field(shop):
    order = place(shop)
    for call in (lambda: place(shop, key="k2", user=""), lambda: get(shop, order.id, "")):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert {v.field for v in details_of(caught.value)[0].field_violations} == {"user_id"}
    assert len(charges(shop)) == 1


def test_request_ids_are_per_user_so_a_replayed_key_never_returns_another_users_order(shop):
    alices = place(shop, key="shared-key", user="alice")
    bobs = place(shop, key="shared-key", user="bob")
    assert bobs.id != alices.id and bobs.user_id == "bob"
    assert place(shop, key="shared-key", user="alice").id == alices.id  # her retry is still hers
    assert len(captured(shop)) == 2


def test_a_store_from_before_owners_is_migrated_and_its_orders_belong_to_nobody(tmp_path):
    import sqlite3
    path = str(tmp_path / "old.db")
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, request_id TEXT NOT NULL UNIQUE, fingerprint TEXT NOT NULL,"
                   " body BLOB NOT NULL, error BLOB, attempt INTEGER NOT NULL DEFAULT 0, status INTEGER NOT NULL,"
                   " updated REAL NOT NULL)")
        db.execute("INSERT INTO orders VALUES ('ord_old', 'k', 'f', ?, NULL, 0, 2, 0)",
                   (orders_pb2.Order(id="ord_old").SerializeToString(),))
    store = OrderStore(path)
    assert store.get("ord_old", "alice") is None and store.get("ord_old", "") is not None
    assert store.by_request("alice", "k") is None
    assert store.stale_pending(0) == []
    index = store._db.connection().execute("SELECT name FROM sqlite_master WHERE type = 'index' AND name = 'orders_by_status'")
    assert index.fetchone() is not None


def test_a_commit_that_fails_leaves_the_paid_order_pending_and_the_retry_confirms_it(shop):
    shop.inventory.failing["commit"] = 1
    with pytest.raises(grpc.RpcError) as caught:
        place(shop, key="commit-flaky")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(captured(shop)) == 1 and shop.inventory.held()  # nothing undone: the order is paid
    order = place(shop, key="commit-flaky")
    assert order.status == Status.ORDER_STATUS_CONFIRMED
    assert captured(shop) == [order.id]  # still one capture, under the first attempt's id
    assert ("release", order.id) not in shop.inventory.calls


def test_an_undo_that_stopped_halfway_is_finished_by_the_retry(shop):
    shop.inventory.failing["release"] = 1
    with pytest.raises(grpc.RpcError) as caught:  # declined: refund done, release fails
        place(shop, key="half-undone", token="tok_declined")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # The customer retries with the same key: the release is finished, nothing is left held.
    with pytest.raises(grpc.RpcError) as caught:
        place(shop, key="half-undone", token="tok_declined")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert shop.inventory.held() == [] and captured(shop) == []


def test_the_sweep_undoes_an_abandoned_order_and_a_late_retry_starts_afresh(shop):
    shop.inventory.failing["commit"] = 1
    with pytest.raises(grpc.RpcError):
        place(shop, key="abandoned")  # paid, not confirmed: PENDING, and the client goes away
    assert shop.servicer.sweep(older_than=60) == 0  # too young to be abandoned
    assert shop.servicer.sweep(older_than=0) == 1
    (first_id,) = {rid for _, rid in shop.inventory.calls}
    assert shop.inventory.held() == [] and captured(shop) == []  # refunded and released
    assert shop.servicer.sweep(older_than=0) == 0  # nothing PENDING is left
    order = place(shop, key="abandoned")
    assert order.status == Status.ORDER_STATUS_CONFIRMED and order.id == first_id
    assert captured(shop) == [f"{order.id}.1"] and shop.inventory.held() == [f"{order.id}.1"]
