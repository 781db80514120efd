"""OrderService: PlaceOrder is a saga (read products -> quote -> reserve -> charge -> confirm)
that compensates (release stock, refund) on any failure. Every step downstream is idempotent,
keyed by the order id (and the attempt, after a transient failure), so retries and resumed
sagas never reserve or charge twice."""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import re
import threading
import uuid

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2

from mesh.runtime.config import InstanceConfig
from mesh.runtime.errors import ServiceError, already_exists, details_of, invalid_argument, not_found, not_found_ids
from mesh.runtime.instance import Servicer, dial
from services.orders.store import OrderStore
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc
from shop.pricing.v1 import pricing_pb2, pricing_pb2_grpc

log = logging.getLogger(__name__)

DOMAIN = "orders.shop.local"
MAX_ITEMS = 50
MAX_QUANTITY = 1000
MAX_USER_ID = 256
CURRENCY = re.compile(r"^[A-Z]{3}$")
LOCK_STRIPES = 64
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
ABANDONED_AFTER = 120.0  # seconds a PENDING order may sit untouched before the sweep undoes it
SWEEP_EVERY = 30.0
Status = orders_pb2.OrderStatus


def _step_id(order: orders_pb2.Order, attempt: int) -> str:
    """The idempotency key of an attempt's reservation and charge."""
    return order.id if attempt == 0 else f"{order.id}.{attempt}"


def _undone() -> ServiceError:
    """A resumed attempt found its reservation or charge already undone (a compensation that did
    not finish): the rest is undone too, and the retry after this transient failure starts a
    fresh attempt."""
    return ServiceError(grpc.StatusCode.UNAVAILABLE,
                        "an earlier try of this order was undone; retry with the same Idempotency-Key")


def _user_violations(user_id: str) -> list[tuple[str, str]]:
    """An order always has an owner: a call without one is refused, never served as nobody's."""
    if not user_id:
        return [("user_id", "required: the authenticated user (the gateway sets it from the token)")]
    if len(user_id) > MAX_USER_ID:
        return [("user_id", f"at most {MAX_USER_ID} characters")]
    return []


def validate(request: orders_pb2.PlaceOrderRequest) -> list[tuple[str, str]]:
    violations = _user_violations(request.user_id)
    if not request.request_id:
        violations.append(("request_id", "required"))
    if not request.customer_id:
        violations.append(("customer_id", "required"))
    if not CURRENCY.match(request.currency):
        violations.append(("currency", "must be an ISO 4217 code such as EUR"))
    if not request.items:
        violations.append(("items", "at least one item is required"))
    if len(request.items) > MAX_ITEMS:
        violations.append(("items", f"at most {MAX_ITEMS} items"))
    for i, item in enumerate(request.items):
        if not item.product_id:
            violations.append((f"items[{i}].product_id", "required"))
        if not 1 <= item.quantity <= MAX_QUANTITY:
            violations.append((f"items[{i}].quantity", f"must be between 1 and {MAX_QUANTITY}"))
    if not request.payment.card_token:
        violations.append(("payment.card_token", "required"))
    return violations


def fingerprint(request: orders_pb2.PlaceOrderRequest) -> str:
    """What makes two requests with one request id the same request."""
    body = orders_pb2.PlaceOrderRequest()
    body.CopyFrom(request)
    body.request_id = ""
    return hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()


class Downstream:
    """The four services orders calls, each over `xds:///NAME:PORT`. Every call is bounded by the
    deadline of the PlaceOrder being handled (mesh/runtime/deadlines.py)."""

    def __init__(self, config: InstanceConfig) -> None:
        self.catalog = catalog_pb2_grpc.CatalogServiceStub(dial(config, "catalog"))
        self.pricing = pricing_pb2_grpc.PricingServiceStub(dial(config, "pricing"))
        self.inventory = inventory_pb2_grpc.InventoryServiceStub(dial(config, "inventory"))
        self.payments = payments_pb2_grpc.PaymentServiceStub(dial(config, "payments"))


def _unknown_products(error: grpc.RpcError, request: orders_pb2.PlaceOrderRequest) -> ServiceError:
    unknown = set(not_found_ids(error))
    return invalid_argument(
        [(f"items[{i}].product_id", "unknown product") for i, item in enumerate(request.items) if item.product_id in unknown]
        or [("items", "unknown product")]
    )


def _renamed_violations(error: grpc.RpcError, renames: dict[str, str]) -> ServiceError:
    """A downstream INVALID_ARGUMENT restated in the fields of PlaceOrderRequest."""
    violations = []
    for detail in details_of(error):
        if isinstance(detail, error_details_pb2.BadRequest):
            violations += [(renames.get(v.field, v.field), v.description) for v in detail.field_violations]
    return invalid_argument(violations or [("request", error.details() or "invalid")])


def _dependency_failed(error: grpc.RpcError, step: str) -> ServiceError:
    code = error.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ServiceError(
            grpc.StatusCode.UNAVAILABLE, f"{step} is unavailable; retry with the same Idempotency-Key", details_of(error)
        )
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return ServiceError(code, error.details() or step, details_of(error))
    log.error("%s failed: %s %s", step, code, error.details())
    return ServiceError(grpc.StatusCode.INTERNAL, "internal error")


class OrderServicer(orders_pb2_grpc.OrderServiceServicer):
    def __init__(self, store: OrderStore, downstream: Downstream) -> None:
        self._store = store
        self._down = downstream
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]

    def GetOrder(self, request, context):
        violations = _user_violations(request.user_id) + ([] if request.id else [("id", "required")])
        if violations:
            raise invalid_argument(violations)
        order = self._store.get(request.id, request.user_id)
        if order is None:  # another user's order reads as a missing one: its existence is not told
            raise not_found(f"order {request.id!r} not found", "ORDER_NOT_FOUND", DOMAIN, [request.id])
        return orders_pb2.GetOrderResponse(order=order)

    def sweep(self, older_than: float = ABANDONED_AFTER) -> int:
        """Undo orders left PENDING (their client gave up, or orders crashed mid-saga and nobody
        retried): refund and release, then FAILED with a transient error, so that a late retry
        with the same key runs a fresh attempt. Returns how many were undone."""
        undone = 0
        for user_id, request_id in self._store.stale_pending(older_than):
            with self._locks[hash((user_id, request_id)) % LOCK_STRIPES]:
                record = self._store.by_request(user_id, request_id)
                if record is None or record.order.status != Status.ORDER_STATUS_PENDING:
                    continue  # a retry finished it meanwhile
                order = record.order
                try:
                    self._compensate(order, _step_id(order, record.attempt))
                except ServiceError:
                    continue  # a dependency is down: the next sweep tries again
                failure = ServiceError(grpc.StatusCode.UNAVAILABLE,
                                       "the order was interrupted and undone; retry with the same Idempotency-Key")
                order.status, order.failure_reason = Status.ORDER_STATUS_FAILED, failure.message
                self._store.save(order, failure.to_status_proto())
                log.warning("abandoned order undone", extra={"order_id": order.id})
                undone += 1
        return undone

    def sweep_forever(self, stop: threading.Event) -> None:
        while not stop.wait(SWEEP_EVERY):
            try:
                self.sweep()
            except Exception:  # the sweep must outlive a bad pass
                log.exception("sweep of abandoned orders failed")

    def PlaceOrder(self, request, context):
        violations = validate(request)
        if violations:
            raise invalid_argument(violations)
        print_ = fingerprint(request)
        # Requests with one id (of one user) run one at a time, so a retry waits for the first attempt.
        with self._locks[hash((request.user_id, request.request_id)) % LOCK_STRIPES]:
            record = self._store.by_request(request.user_id, request.request_id)
            if record is None:
                now = timestamp_pb2.Timestamp()
                now.FromDatetime(datetime.datetime.now(datetime.UTC))
                draft = orders_pb2.Order(
                    id=f"ord_{uuid.uuid4().hex[:20]}",
                    customer_id=request.customer_id,
                    user_id=request.user_id,
                    status=Status.ORDER_STATUS_PENDING,
                    create_time=now,
                )
                record = self._store.create(draft, request.request_id, print_)
            if record.fingerprint != print_:
                raise already_exists(
                    "this Idempotency-Key was used for a different order",
                    "IDEMPOTENCY_KEY_REUSED",
                    DOMAIN,
                    {"order_id": record.order.id},
                )
            if record.order.status == Status.ORDER_STATUS_CONFIRMED:
                return orders_pb2.PlaceOrderResponse(order=record.order)
            if record.order.status == Status.ORDER_STATUS_FAILED and record.error is not None:
                failure = ServiceError.from_status_proto(record.error)
                if failure.code not in TRANSIENT:
                    raise failure
                # The last attempt was undone because a dependency was unavailable: try again,
                # with fresh reservation and charge ids (the old ones are tombstones now).
                record.attempt += 1
                record.order.status = Status.ORDER_STATUS_PENDING
                record.order.failure_reason = ""
                for field in ("items", "total", "pricing_version"):
                    record.order.ClearField(field)  # the new attempt prices again
                self._store.save(record.order, attempt=record.attempt)
            return orders_pb2.PlaceOrderResponse(order=self._saga(record.order, request, record.attempt))

    # -- the saga -----------------------------------------------------------------------------
    def _saga(self, order: orders_pb2.Order, request: orders_pb2.PlaceOrderRequest, attempt: int) -> orders_pb2.Order:
        step_id = _step_id(order, attempt)
        try:
            if not order.items:  # a resumed attempt keeps the price it may already have charged
                self._price(order, request)
                self._store.save(order)
            stock_items = [inventory_pb2.StockItem(product_id=i.product_id, quantity=i.quantity) for i in request.items]
            reservation = self._call("inventory", self._down.inventory.ReserveStock,
                                     inventory_pb2.ReserveStockRequest(reservation_id=step_id, items=stock_items)).reservation
            if reservation.status == inventory_pb2.RESERVATION_STATUS_RELEASED:
                raise _undone()
            charge = self._call("payments", self._down.payments.Charge, payments_pb2.ChargeRequest(
                charge_id=step_id, order_id=order.id, amount=order.total, card_token=request.payment.card_token),
                renames={"card_token": "payment.card_token"}).charge
            if charge.status != payments_pb2.CHARGE_STATUS_CAPTURED:
                raise _undone()
        except ServiceError as failure:
            # Always undo, even when this attempt failed before reserving: a resumed saga's
            # earlier try may have reserved or charged. Raises UNAVAILABLE (the order stays
            # PENDING for a retry) when it cannot finish.
            self._compensate(order, step_id)
            order.status = Status.ORDER_STATUS_FAILED
            order.failure_reason = failure.message
            self._store.save(order, failure.to_status_proto())
            log.info("order failed", extra={"order_id": order.id, "reason": failure.message})
            raise
        # Paid: from here the order can only go forward. A commit that fails leaves the order
        # PENDING, and the retry commits (the reservation is held, the charge captured).
        try:
            self._call("inventory", self._down.inventory.CommitReservation,
                       inventory_pb2.CommitReservationRequest(reservation_id=step_id))
        except ServiceError as failure:
            log.warning("order %s paid but not yet confirmed: %s", order.id, failure.message)
            raise ServiceError(grpc.StatusCode.UNAVAILABLE,
                               "the order is paid and not yet confirmed; retry with the same Idempotency-Key") from None
        order.status = Status.ORDER_STATUS_CONFIRMED
        self._store.save(order)
        log.info("order confirmed", extra={"order_id": order.id, "total_units": order.total.units})
        return order

    def _price(self, order: orders_pb2.Order, request: orders_pb2.PlaceOrderRequest) -> None:
        ids = [item.product_id for item in request.items]
        try:
            self._down.catalog.BatchGetProducts(
                catalog_pb2.BatchGetProductsRequest(ids=ids), wait_for_ready=True)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise _unknown_products(error, request) from None
            raise _dependency_failed(error, "catalog") from None
        quote_items = [pricing_pb2.QuoteItem(product_id=i.product_id, quantity=i.quantity) for i in request.items]
        quote = self._call(
            "pricing",
            self._down.pricing.GetQuote,
            pricing_pb2.GetQuoteRequest(items=quote_items, currency_code=request.currency),
            renames={"currency_code": "currency"},
        ).quote
        del order.items[:]
        for line in quote.lines:
            order.items.add(product_id=line.product_id, quantity=line.quantity,
                            unit_price=line.unit_price, line_total=line.line_total)
        order.total.CopyFrom(quote.total)
        order.pricing_version = quote.pricing_version

    def _call(self, step: str, method, message, renames: dict[str, str] | None = None):
        try:
            # wait_for_ready: a peer that is restarting gets the call's deadline to come back,
            # instead of failing the call at once while its connection backs off.
            return method(message, wait_for_ready=True)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise _renamed_violations(error, renames or {}) from None
            raise _dependency_failed(error, step) from None

    def _compensate(self, order: orders_pb2.Order, step_id: str) -> None:
        """Give back whatever the saga may have taken. Both calls are idempotent and leave
        tombstones, so a reservation or charge still in flight takes nothing later."""
        try:
            self._down.payments.Refund(payments_pb2.RefundRequest(charge_id=step_id), wait_for_ready=True)
            self._down.inventory.ReleaseStock(
                inventory_pb2.ReleaseStockRequest(reservation_id=step_id), wait_for_ready=True)
        except grpc.RpcError as error:
            log.error("compensation of %s incomplete: %s; a retry resumes it", order.id, error.code())
            raise ServiceError(grpc.StatusCode.UNAVAILABLE,
                               "could not undo the order yet; retry with the same Idempotency-Key") from None


def make_servicers(config: InstanceConfig, settings: object) -> list[Servicer]:
    servicer = OrderServicer(OrderStore(os.path.join(config.data_dir, "orders.db")), Downstream(config))
    threading.Thread(target=servicer.sweep_forever, args=(threading.Event(),), name="sweep", daemon=True).start()
    return [Servicer.of(orders_pb2, "OrderService", orders_pb2_grpc.add_OrderServiceServicer_to_server, servicer)]
