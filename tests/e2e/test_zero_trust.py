"""README "Zero trust": the shipped istio/security.yaml, as `make up` runs it. Every service port
demands mTLS, and each service answers only the callers its AuthorizationPolicy names, whatever
the server's language (catalog and payments: Python, pricing: TypeScript, inventory: Go).

Each row calls one instance's port directly, presenting a certificate the mesh CA issues for the
caller it acts as (`mesh.runner.mtls`). A call past the policy gets the server's own answer: an
empty request is INVALID_ARGUMENT, which nothing else gives. What each attempt got is kept with
the traffic figures (`python tests/support/figures.py`, "mesh policy").
"""

from __future__ import annotations

import grpc
import pytest

from mesh.runner import mtls, topology
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from shop.payments.v1 import payments_pb2, payments_pb2_grpc
from shop.pricing.v1 import pricing_pb2, pricing_pb2_grpc
from support.drivers import instances
from support.figures import Figures

PLAINTEXT = None
OTHER_NAMESPACE = "other"  # a workload of another namespace, with a valid mesh certificate

CALLS = {
    "orders.GetOrder": ("orders", lambda ch: orders_pb2_grpc.OrderServiceStub(ch).GetOrder(
        orders_pb2.GetOrderRequest(), timeout=5)),
    "payments.Refund": ("payments", lambda ch: payments_pb2_grpc.PaymentServiceStub(ch).Refund(
        payments_pb2.RefundRequest(), timeout=5)),
    "inventory.ReserveStock": ("inventory", lambda ch: inventory_pb2_grpc.InventoryServiceStub(ch).ReserveStock(
        inventory_pb2.ReserveStockRequest(), timeout=5)),
    "inventory.GetStock": ("inventory", lambda ch: inventory_pb2_grpc.InventoryServiceStub(ch).GetStock(
        inventory_pb2.GetStockRequest(product_id="sku-grinder"), timeout=5)),
    "pricing.ListCurrencies": ("pricing", lambda ch: pricing_pb2_grpc.PricingServiceStub(ch).ListCurrencies(
        pricing_pb2.ListCurrenciesRequest(), timeout=5)),
    "catalog.ListProducts": ("catalog", lambda ch: catalog_pb2_grpc.CatalogServiceStub(ch).ListProducts(
        catalog_pb2.ListProductsRequest(), timeout=5)),
}

ROWS = [  # (call, caller: service account, (namespace, account), or PLAINTEXT), expected
    ("orders.GetOrder", "gateway", "INVALID_ARGUMENT"),
    ("orders.GetOrder", "pricing", "PERMISSION_DENIED"),
    ("orders.GetOrder", PLAINTEXT, "UNAVAILABLE"),
    ("payments.Refund", "orders", "INVALID_ARGUMENT"),
    ("payments.Refund", "gateway", "PERMISSION_DENIED"),
    ("inventory.ReserveStock", "orders", "INVALID_ARGUMENT"),
    ("inventory.ReserveStock", "gateway", "PERMISSION_DENIED"),
    ("inventory.GetStock", "gateway", "OK"),
    ("inventory.GetStock", (OTHER_NAMESPACE, "gateway"), "PERMISSION_DENIED"),
    ("inventory.GetStock", PLAINTEXT, "UNAVAILABLE"),
    ("pricing.ListCurrencies", "inventory", "OK"),
    ("pricing.ListCurrencies", (OTHER_NAMESPACE, "orders"), "PERMISSION_DENIED"),
    ("pricing.ListCurrencies", PLAINTEXT, "UNAVAILABLE"),
    ("catalog.ListProducts", "payments", "OK"),
    ("catalog.ListProducts", (OTHER_NAMESPACE, "orders"), "PERMISSION_DENIED"),
    ("catalog.ListProducts", PLAINTEXT, "UNAVAILABLE"),
]
figures = Figures("mesh policy")


def channel(mesh, service: str, caller) -> grpc.Channel:
    first = instances(mesh, service)[0]
    port, host = first.port, first.host  # its own loopback address under istiod (topology.Placement.istiod)
    if caller is PLAINTEXT:
        return grpc.insecure_channel(f"{host}:{port}")
    if isinstance(caller, tuple):
        namespace, account = caller
        authority = f"{service}.{topology.NAMESPACE}.svc.cluster.local"
        return grpc.secure_channel(f"{host}:{port}", mtls.client_credentials(mesh.run_dir / "ca", account, namespace),
                                   options=[("grpc.ssl_target_name_override", authority)])
    return mtls.direct_channel(mesh.run_dir, port, service, caller=caller, host=host)


def describe(caller) -> str:
    if caller is PLAINTEXT:
        return "plaintext"
    namespace, account = caller if isinstance(caller, tuple) else (topology.NAMESPACE, caller)
    return f"spiffe://cluster.local/ns/{namespace}/sa/{account}"


@pytest.mark.parametrize("call, caller, expected", ROWS, ids=[f"{c}-{describe(w)}" for c, w, _ in ROWS])
def test_the_shipped_policy_admits_only_the_callers_it_names(mesh, call, caller, expected) -> None:
    service, invoke = CALLS[call]
    with channel(mesh, service, caller) as ch:
        try:
            invoke(ch)
            got = "OK"
        except grpc.RpcError as error:
            got = error.code().name
    language = instances(mesh, service)[0].language
    figures.add(f"{call} ({language}) as {describe(caller)}", expected=expected, got=got)
    assert got == expected
