"""Real traffic through the running mesh, one driver per client language. The test calls a real
service, and that service's own runtime-made gRPC client calls the upstream under test:

| language   | the test calls                                | whose client calls   |
|------------|-----------------------------------------------|----------------------|
| python     | orders PlaceOrder (orders' gRPC port)         | orders -> pricing    |
| typescript | pricing GetQuote (pricing-v1's port)          | pricing -> catalog   |
| go         | inventory ReserveStock, then ReleaseStock     | inventory -> catalog |
|            | (inventory-1's port; a new reservation asks   |                      |
|            | the catalog first)                            |                      |

The test calls over mTLS as the service that makes that call in the shop (`Driver.caller`: the
gateway calls orders and pricing, orders calls inventory), as istio/security.yaml allows.

Nothing is used up: the order asks for more grinders than exist (orders prices it, then inventory
answers out of stock: FAILED_PRECONDITION means pricing answered), and every reservation is released.

Each call's `Outcome` says what the driven service answered, how long it took, and what that says
about its upstream call: `upstream_ok` (the upstream answered) or `upstream_failed` (the service
passed on an upstream UNAVAILABLE or DEADLINE_EXCEEDED: orders and inventory answer UNAVAILABLE
naming the upstream, pricing passes the code on unchanged).

    driver = make_driver(mesh, "go")
    outcomes = driver.run(1000, metadata=(("x-user-tier", "beta"),))
    driver.upstream_counts()      # instance -> channelz calls started, over the upstream's instances
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc

from mesh.runner import mtls, topology
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from shop.pricing.v1 import pricing_pb2, pricing_pb2_grpc
from support.channelz import ServerCalls, server_calls
from support.csds import cluster_name

__all__ = ["LANGUAGES", "Driver", "Outcome", "instances", "make_driver", "service_port"]

LANGUAGES = ("python", "typescript", "go")
Metadata = Sequence[tuple[str, str]]


@dataclasses.dataclass(frozen=True)
class Outcome:
    code: str  # the driven service's answer: "OK", "UNAVAILABLE", ...
    details: str
    seconds: float  # as the test saw it
    upstream_ok: bool
    upstream_failed: bool
    ended: float = 0.0  # time.monotonic() when the answer came
    key: str = ""  # the call's own id (orders: the request id)
    started_at: float = 0.0  # time.time() when the test sent it


def instances(mesh, service: str) -> list[topology.Process]:
    """The runner's processes of `service` at this mesh's offset, in topology order."""
    return [p for p in topology.build(mesh.run_dir, mesh.offset) if p.service == service]


def service_port(mesh, service: str) -> int:
    """The port clients dial `service` at (xds:///NAME:PORT), at this mesh's offset."""
    return next(s.port for s in topology.SERVICES if s.name == service) + mesh.offset


class Driver:
    language: str
    client_service: str
    upstream: str
    caller: str  # the service account the test's calls present (the shop's own caller of client_service)
    # the default concurrency of run(): orders is a 16-thread Python server that serializes the
    # requests whose ids share one of its 64 lock stripes; the others take more
    concurrency = 16

    def __init__(self, mesh) -> None:
        self.mesh = mesh
        self.client = instances(mesh, self.client_service)[0]
        # mTLS as the service that makes this call in the shop (istio/security.yaml allows it)
        self.channel = mtls.direct_channel(mesh.run_dir, self.client.port, self.client_service, caller=self.caller,
                                           host=self.client.host)

    # -- what the test reads ---------------------------------------------------------------------------
    @property
    def client_admin(self) -> str:
        """The admin port of the instance whose client is under test (its CSDS, its channelz)."""
        return f"{self.client.host}:{self.client.admin_port}"

    @property
    def upstream_port(self) -> int:
        return service_port(self.mesh, self.upstream)

    def cluster(self, subset: str = "") -> str:
        return cluster_name(self.upstream, self.upstream_port, subset)

    def upstream_instances(self) -> list[topology.Process]:
        return instances(self.mesh, self.upstream)

    def upstream_calls(self, extra: Iterable = ()) -> dict[str, ServerCalls]:
        """instance name -> its business server's channelz counters, for every instance of the
        upstream (and `extra` replicas: objects with .name, .admin, .port)."""
        out = {p.name: server_calls(f"{p.host}:{p.admin_port}", p.port) for p in self.upstream_instances()}
        for replica in extra:
            out[replica.name] = server_calls(replica.admin, replica.port)
        return out

    def version_of(self, instance: str) -> str:
        return next(p.version for p in self.upstream_instances() if p.name == instance)

    # -- calls -------------------------------------------------------------------------------------------
    def call(self, metadata: Metadata = (), timeout: float = 10.0) -> Outcome:
        raise NotImplementedError

    def run(self, calls: int, concurrency: int | None = None, metadata: Metadata = (),
            timeout: float = 10.0) -> list[Outcome]:
        """`calls` calls, `concurrency` at a time; every outcome, in completion order."""
        with ThreadPoolExecutor(concurrency or self.concurrency) as pool:
            return list(pool.map(lambda _: self.call(metadata, timeout), range(calls)))

    @contextlib.contextmanager
    def background(self, concurrency: int, metadata: Metadata = (), timeout: float = 10.0) -> Iterator[list[Outcome]]:
        """Calls from `concurrency` threads for as long as the block runs; yields the outcomes so
        far (a list that grows); the threads are joined when the block ends."""
        outcomes: list[Outcome] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                outcomes.append(self.call(metadata, timeout))

        threads = [threading.Thread(target=loop, name=f"traffic-{i}", daemon=True) for i in range(concurrency)]
        for thread in threads:
            thread.start()
        try:
            yield outcomes
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout + 5)

    def queued(self, outcomes: Sequence[Outcome]) -> list[float]:
        """Per outcome, the seconds the call waited in the driven service before it was taken up
        (before its client called the upstream at all): none, but in orders (see there)."""
        return [0.0] * len(outcomes)

    def _timed(self, invoke: Callable[[], object], read: Callable[[grpc.StatusCode, str], tuple[bool, bool]],
               key: str = "") -> Outcome:
        started_at, started = time.time(), time.monotonic()
        try:
            invoke()
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as error:
            code, details = error.code(), error.details() or ""
        ended = time.monotonic()
        ok, failed = read(code, details)
        return Outcome(code.name, details, ended - started, ok, failed, ended, key, started_at)


class OrdersDriver(Driver):
    """Python: orders -> pricing. The order is for more grinders than exist: orders reads the
    catalog, asks pricing for a quote, then inventory answers out of stock and orders undoes it."""

    language, client_service, upstream = "python", "orders", "pricing"
    caller = "gateway"

    def __init__(self, mesh) -> None:
        super().__init__(mesh)
        self.stub = orders_pb2_grpc.OrderServiceStub(self.channel)

    def call(self, metadata: Metadata = (), timeout: float = 10.0) -> Outcome:
        request = orders_pb2.PlaceOrderRequest(
            request_id=f"traffic-{uuid.uuid4().hex}", user_id="traffic-test", customer_id="traffic-test", currency="EUR",
            items=[orders_pb2.LineItem(product_id="sku-grinder", quantity=1000)],
            payment=orders_pb2.Payment(card_token="tok_visa"))
        return self._timed(
            lambda: self.stub.PlaceOrder(request, timeout=timeout, metadata=tuple(metadata)),
            lambda code, details: (code == grpc.StatusCode.FAILED_PRECONDITION and "out of stock" in details,
                                   code == grpc.StatusCode.UNAVAILABLE and details.startswith("pricing ")),
            request.request_id)

    def queued(self, outcomes: Sequence[Outcome]) -> list[float]:
        """Orders runs the PlaceOrders whose request ids share one of its 64 lock stripes one after
        the other (services/orders/servicer.py), so a call may wait there for another before orders
        does anything. The order's create_time is when orders took the request up (it is stamped
        inside the lock): read from orders' own database, read-only, by request id."""
        path = self.mesh.run_dir / "data" / "orders.db"
        taken_up = {}
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
            keys = [o.key for o in outcomes]
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                rows = db.execute(f"SELECT request_id, body FROM orders WHERE request_id IN ({','.join('?' * len(chunk))})",
                                  chunk).fetchall()
                for request_id, body in rows:
                    created = orders_pb2.Order.FromString(body).create_time
                    taken_up[request_id] = created.seconds + created.nanos / 1e9
        missing = [o.key for o in outcomes if o.key not in taken_up]
        assert not missing, f"orders has no order for {len(missing)} request ids, e.g. {missing[:3]}"
        return [max(0.0, taken_up[o.key] - o.started_at) for o in outcomes]


class PricingDriver(Driver):
    """TypeScript: pricing -> catalog. GetQuote on pricing-v1 reads base prices from the catalog."""

    language, client_service, upstream = "typescript", "pricing", "catalog"
    caller = "gateway"
    concurrency = 32

    def __init__(self, mesh) -> None:
        super().__init__(mesh)
        self.stub = pricing_pb2_grpc.PricingServiceStub(self.channel)

    def call(self, metadata: Metadata = (), timeout: float = 10.0) -> Outcome:
        request = pricing_pb2.GetQuoteRequest(items=[pricing_pb2.QuoteItem(product_id="sku-grinder", quantity=1)],
                                              currency_code="EUR")
        return self._timed(
            lambda: self.stub.GetQuote(request, timeout=timeout, metadata=tuple(metadata)),
            lambda code, details: (code == grpc.StatusCode.OK,
                                   code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)))


# Products with stock to spare, none of which tests/e2e/test_shop.py counts; each reservation is
# of one unit and is released at once.
SPARE_STOCK = ("sku-espresso-cup", "sku-pour-over", "sku-filter-papers", "sku-beans-ethiopia", "sku-beans-colombia",
               "sku-travel-mug", "sku-cleaning-tabs")


class InventoryDriver(Driver):
    """Go: inventory -> catalog. ReserveStock of a new reservation asks the catalog whether the
    product exists; the reservation is released right after."""

    language, client_service, upstream = "go", "inventory", "catalog"
    caller = "orders"
    concurrency = 32

    def __init__(self, mesh) -> None:
        super().__init__(mesh)
        self.stub = inventory_pb2_grpc.InventoryServiceStub(self.channel)
        self._products = itertools.cycle(SPARE_STOCK)
        self._lock = threading.Lock()

    def call(self, metadata: Metadata = (), timeout: float = 10.0) -> Outcome:
        with self._lock:
            product = next(self._products)
        reservation = f"traffic-{uuid.uuid4().hex}"
        request = inventory_pb2.ReserveStockRequest(
            reservation_id=reservation, items=[inventory_pb2.StockItem(product_id=product, quantity=1)])
        outcome = self._timed(
            lambda: self.stub.ReserveStock(request, timeout=timeout, metadata=tuple(metadata)),
            lambda code, details: (code == grpc.StatusCode.OK,
                                   code == grpc.StatusCode.UNAVAILABLE and "catalog unavailable" in details))
        if outcome.code == "OK":
            self.stub.ReleaseStock(inventory_pb2.ReleaseStockRequest(reservation_id=reservation), timeout=10)
        return outcome


DRIVERS = {d.language: d for d in (OrdersDriver, PricingDriver, InventoryDriver)}


def make_driver(mesh, language: str) -> Driver:
    return DRIVERS[language](mesh)
