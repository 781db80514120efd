"""The traffic scenarios of istio/scenarios/ through the running mesh, applied as their READMEs say
(`python -m mesh.runner scenario NAME --apply-only`, or the README's steps one by one) and checked
by what a user sees through the gateway: an injected abort hidden by retries, a timeout that fires
fast, a failing replica ejected, load shed by a circuit breaker. Each test takes every scenario
off again (`scenario --off`: files and chaos overrides) and waits until the shop answers as before."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import time
import uuid

import grpc
import httpx
import pytest

from mesh.runner import mtls, topology
from mesh.runner.topology import ROOT
from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from support.poll import poll_until

SCENARIOS = ROOT / "istio" / "scenarios"
PAGE = "/v1/products/sku-grinder"
# Products no other end-to-end test counts the stock of: each confirmed order here takes one unit.
PRODUCTS = ("sku-pour-over", "sku-cleaning-tabs", "sku-beans-ethiopia")


@pytest.fixture
def scenarios(mesh):
    """apply(name) applies a scenario; at the end every scenario is taken off, and the shop answers."""

    def apply(name: str) -> None:
        done = mesh.runner("scenario", name, "--apply-only", check=False)
        assert done.returncode == 0, done.stdout + done.stderr

    defaults = {p.name: p.read_text() for p in mesh.istio_dir.glob("*.yaml")}
    yield apply
    done = mesh.runner("scenario", "--off", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    # the defaults again, as they were (a rule a scenario replaced is back), and nothing else
    assert {p.name: p.read_text() for p in mesh.istio_dir.glob("*")} == defaults
    with httpx.Client(base_url=mesh.gateway, timeout=30) as http:
        poll_until(lambda: all(_timed(http.get, PAGE)[0].status_code == 200 for _ in range(20)), 30, 0.2,
                   "product pages answering again")


def _timed(call, *args, **kwargs) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    reply = call(*args, **kwargs)
    return reply, time.monotonic() - started


def place(http: httpx.Client, product: str) -> httpx.Response:
    return http.post("/v1/orders", headers={"Idempotency-Key": f"scenario-{uuid.uuid4().hex}"}, json={
        "customerId": "scenarios", "currency": "EUR", "items": [{"productId": product, "quantity": 1}],
        "payment": {"cardToken": "tok_visa"}})


def _log_from(mesh, name: str):
    """A function returning what `name` has logged since now."""
    path = mesh.run_dir / "logs" / f"{name}.log"
    start = path.stat().st_size

    def since() -> str:
        with open(path, "rb") as log:
            log.seek(start)
            return log.read().decode(errors="replace")

    return since


def _state(mesh) -> dict[str, dict]:
    return {p["name"]: p for p in json.loads((mesh.run_dir / "state.json").read_text())["processes"]}


def _directly(mesh, instance: str) -> grpc.StatusCode:
    """GetStock asked of one inventory instance itself, not through the mesh."""
    with mtls.direct_channel(mesh.run_dir, _state(mesh)[instance]["port"], "inventory") as channel:
        try:
            inventory_pb2_grpc.InventoryServiceStub(channel).GetStock(
                inventory_pb2.GetStockRequest(product_id="sku-grinder"), timeout=5)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def _chaos(mesh, *args: str) -> None:
    done = mesh.runner("chaos", *args, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_payments_abort_is_hidden_from_users_by_the_gateways_retries(mesh, http, scenarios):
    scenarios("payments-abort")
    orders_log = _log_from(mesh, "orders")

    def aborted() -> int:  # attempts of orders that failed on payments: the abort in force
        return sum(1 for line in orders_log().splitlines()
                   if "payments is unavailable" in line or ("compensation of" in line and "incomplete" in line))

    replies = []
    for n in range(150):  # until the abort has fired a few times (10% of charges)
        replies.append(place(http, PRODUCTS[n % len(PRODUCTS)]))
        if n >= 30 and aborted() >= 3:
            break
    assert aborted() >= 3, f"the abort fired {aborted()} times in {len(replies)} orders"
    failed = [(r.status_code, r.text) for r in replies if r.status_code != 200]
    assert failed == [], f"{len(failed)} of {len(replies)} orders reached the user as errors: {failed[:3]}"
    assert all(r.json()["order"]["status"] == "ORDER_STATUS_CONFIRMED" for r in replies)


def test_inventory_timeout_makes_the_order_fail_fast_instead_of_hanging(mesh, http, scenarios):
    scenarios("inventory-timeout")  # ReserveStock delayed 10 s, timeout 1 s

    def fails_fast():
        reply, took = _timed(place, http, PRODUCTS[0])
        return reply.status_code == 503 and took < 5 and (reply, took)

    reply, took = poll_until(fails_fast, 35, 0.1, "an order failing with 503 well before the 10 s delay")
    assert reply.json()["error"]["code"] == "UNAVAILABLE" and "inventory" in reply.json()["error"]["message"]
    page, took = _timed(http.get, PAGE)  # GetStock takes the route without delay
    assert page.status_code == 200 and took < 2


@pytest.mark.skipif(topology.control_plane_from_env() == "istiod",
                    reason="istiod sends proxyless clients no outlier detection (tests/e2e/test_traffic_outliers.py)")
def test_outlier_detection_ejects_the_failing_inventory_replica(mesh, http, scenarios):
    # The README's steps by hand: no retries, inventory-2 failing, then the DestinationRule.
    # (the `scenarios` fixture takes the files and the chaos off afterwards)
    folder = SCENARIOS / "outlier-detection"
    shutil.copy(folder / "inventory-no-retries.yaml", mesh.istio_dir)
    _chaos(mesh, "inventory-2", "--fail-percent", "100")
    assert _directly(mesh, "inventory-2") == grpc.StatusCode.UNAVAILABLE
    assert _directly(mesh, "inventory-1") == grpc.StatusCode.OK
    rows = {line.split()[0]: line.split() for line in mesh.runner("status", check=False).stdout.splitlines() if line}
    assert rows["inventory-2"][-3:] == ["fail=100%", "0", "passing"]  # OVERRIDES, RESTARTS (no crash), HEALTH
    assert rows["inventory-1"][-3:] == ["-", "0", "passing"]

    def half_fail():
        failed = sum(http.get(PAGE).status_code != 200 for _ in range(40))
        return 8 <= failed <= 32 and failed

    poll_until(half_fail, 15, 0.1, "about half of the product pages failing (every other GetStock)")
    shutil.copy(folder / "inventory-outlier-detection.yaml", mesh.istio_dir)
    (mesh.istio_dir / "inventory.yaml").rename(mesh.istio_dir / "inventory.yaml.parked")  # as the README says
    started = time.monotonic()
    poll_until(lambda: all(http.get(PAGE).status_code == 200 for _ in range(50)), 20, 0.05,
               "50 product pages in a row without an error")
    assert time.monotonic() - started < 10
    # inventory-2 still fails: the pages are clean because no call goes to it any more
    assert _directly(mesh, "inventory-2") == grpc.StatusCode.UNAVAILABLE


def _burst(mesh, calls: int = 20) -> list[tuple[int, float]]:
    with (httpx.Client(base_url=mesh.gateway, timeout=30, limits=httpx.Limits(max_connections=calls)) as client,
          concurrent.futures.ThreadPoolExecutor(max_workers=calls) as pool):
        timed = pool.map(lambda _: _timed(client.get, PAGE), range(calls))
        return [(reply.status_code, took) for reply, took in timed]


def test_circuit_breaker_sheds_load_with_unavailable_instead_of_queueing(mesh, http, scenarios):
    _chaos(mesh, "inventory", "--delay-ms", "1000")  # both replicas: 1 s per call

    def everyone_waits():
        replies = _burst(mesh)
        return all(status == 200 and took >= 0.9 for status, took in replies) and replies

    poll_until(everyone_waits, 20, 0.1, "20 pages at once, all answered after inventory's second")
    shutil.copy(SCENARIOS / "circuit-breaker" / "inventory-circuit-breaker.yaml", mesh.istio_dir)
    (mesh.istio_dir / "inventory.yaml").rename(mesh.istio_dir / "inventory.yaml.parked")  # as the README says

    def shed():
        replies = _burst(mesh)
        dropped = [took for status, took in replies if status == 503]
        served = [took for status, took in replies if status == 200]
        return (len(dropped) >= 10 and max(dropped) < 0.5 and len(served) + len(dropped) == len(replies)
                and all(took >= 0.9 for took in served) and replies)

    poll_until(shed, 20, 0.1, "most of 20 pages at once failing at once with 503, the rest waiting")
    assert http.get(PAGE).status_code == 200  # a lone page is within the limit
