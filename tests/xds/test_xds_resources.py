"""The resource store and the reconciler: versions per resource, sharing, consistency, and a
service whose translation fails keeping its last good resources; the supervisor; unreadable
Consul entries. Pure units: no network."""

from __future__ import annotations

import asyncio
import logging

from mesh.xds import catalog as catalog_module
from mesh.xds.catalog import Catalog, Endpoint, endpoints_from_health
from mesh.xds.reconcile import Reconciler
from mesh.xds.resources import ResourceStore
from mesh.xds.supervise import Supervisor
from mesh.xds.translate import CLUSTER, ENDPOINT, LISTENER, ROUTE, WorkloadIdentity

CATALOG_EDS = "outbound|7000||catalog.default.svc.cluster.local"
PAYMENTS_EDS = "outbound|7000||payments.default.svc.cluster.local"
IDENTITY = WorkloadIdentity.of("default", {"app": "orders", "version": "v1"})


def catalog(**services: list[tuple[str, str, int]]) -> Catalog:
    return Catalog.of({name: [Endpoint(*e) for e in eps] for name, eps in services.items()})


def reconciled(store: ResourceStore, new: Catalog, reconciler: Reconciler | None = None) -> Reconciler:
    reconciler = reconciler or Reconciler(store, "default")
    reconciler.set_catalog(new)
    reconciler.rebuild()
    return reconciler


def get(store: ResourceStore, type_url: str, name: str, identity: WorkloadIdentity = IDENTITY):
    return store.get(type_url, name, identity.namespace, identity)


def ports(resource) -> list[int]:
    return sorted(e.endpoint.address.socket_address.port_value for loc in resource.message.endpoints
                  for e in loc.lb_endpoints)


def test_a_listener_brings_its_route_cluster_and_endpoints_ready_and_consistent():
    store = ResourceStore()
    reconciled(store, catalog(catalog=[("c1", "127.0.0.1", 5001)]))
    listener = get(store, LISTENER, "catalog:7000")
    assert listener.references == ((ROUTE, CATALOG_EDS),)
    route = get(store, ROUTE, CATALOG_EDS)
    assert route.references == ((CLUSTER, CATALOG_EDS),)
    assert get(store, CLUSTER, CATALOG_EDS).references == ((ENDPOINT, CATALOG_EDS),)
    assert ports(get(store, ENDPOINT, CATALOG_EDS)) == [5001]
    assert len(store) == 4 and not store.problems


def test_an_endpoint_change_gives_a_new_version_to_that_service_endpoints_only():
    store = ResourceStore()
    reconciler = reconciled(store, catalog(catalog=[("c1", "127.0.0.1", 5001)], payments=[("p1", "127.0.0.1", 6001)]))
    before = {(t, n): get(store, t, n) for t, n in ((LISTENER, "catalog:7000"), (ENDPOINT, CATALOG_EDS),
                                                     (ENDPOINT, PAYMENTS_EDS))}
    reconciled(store, catalog(catalog=[("c1", "127.0.0.1", 5001), ("c2", "127.0.0.1", 5002)],
                              payments=[("p1", "127.0.0.1", 6001)]), reconciler)
    after = {key: get(store, *key) for key in before}
    assert after[(ENDPOINT, CATALOG_EDS)].version > before[(ENDPOINT, CATALOG_EDS)].version
    assert ports(after[(ENDPOINT, CATALOG_EDS)]) == [5001, 5002]
    # the same objects: not rebuilt into new versions, and serialized once for every stream
    assert after[(LISTENER, "catalog:7000")] is before[(LISTENER, "catalog:7000")]
    assert after[(ENDPOINT, PAYMENTS_EDS)] is before[(ENDPOINT, PAYMENTS_EDS)]


def test_nodes_share_resources_and_server_listeners_are_per_identity():
    store = ResourceStore()
    reconciled(store, catalog(catalog=[("c1", "127.0.0.1", 5001)]))
    other = WorkloadIdentity.of("default", {"app": "pricing", "version": "v2"})
    assert get(store, ENDPOINT, CATALOG_EDS) is get(store, ENDPOINT, CATALOG_EDS, other)
    server = "xds.istio.io/grpc/lds/inbound/127.0.0.1:6000"
    mine, theirs = get(store, LISTENER, server), get(store, LISTENER, server, other)
    assert mine is not theirs and mine.packed.value == theirs.packed.value  # equal today; policy will differ
    assert get(store, LISTENER, server) is mine


def test_a_failing_service_keeps_its_last_good_resources_and_recovers(caplog):
    store = ResourceStore()
    good = catalog(catalog=[("c1", "127.0.0.1", 5001)], payments=[("p1", "127.0.0.1", 6001)])
    reconciler = reconciled(store, good)
    served = get(store, ENDPOINT, CATALOG_EDS)
    with caplog.at_level(logging.ERROR, logger="mesh.xds.reconcile"):
        for _ in range(2):  # the same failure twice is logged once
            reconciled(store, catalog(catalog=[("c1", "127.0.0.1", 5001), ("bad", "catalog.example", 5002)],
                                      payments=[("p1", "127.0.0.1", 6001), ("p2", "127.0.0.1", 6002)]), reconciler)
    [record] = caplog.records
    assert "translation of catalog.default.svc.cluster.local failed" in record.getMessage()
    assert "'bad': address 'catalog.example' is not an IP" in record.getMessage()
    assert get(store, ENDPOINT, CATALOG_EDS) is served  # the last good version keeps serving
    assert ports(get(store, ENDPOINT, PAYMENTS_EDS)) == [6001, 6002]  # the others move on
    assert list(reconciler.failures) and "catalog.example" in next(iter(reconciler.failures.values()))
    reconciled(store, good, reconciler)
    assert not reconciler.failures and ports(get(store, ENDPOINT, PAYMENTS_EDS)) == [6001]


def test_a_service_leaving_the_catalog_keeps_answering_with_no_endpoints():
    store = ResourceStore()
    reconciler = reconciled(store, catalog(catalog=[("c1", "127.0.0.1", 5001)]))
    get(store, LISTENER, "catalog:7000")
    reconciled(store, catalog(), reconciler)
    assert ports(get(store, ENDPOINT, CATALOG_EDS)) == []
    assert get(store, LISTENER, "catalog:7000") is not None  # never "does not exist"


def test_forget_drops_what_no_node_uses_but_keeps_what_used_resources_refer_to():
    store = ResourceStore()
    reconciled(store, catalog(catalog=[("c1", "127.0.0.1", 5001)]))
    get(store, LISTENER, "catalog:7000")
    get(store, LISTENER, "payments:7000")
    dropped = store.forget(lambda key: key[1] == "catalog:7000")
    assert dropped == 4 and len(store) == 4
    assert get(store, ENDPOINT, CATALOG_EDS) is not None


def test_unreadable_consul_entries_are_skipped_with_one_warning_each(caplog):
    good = {"Node": {"Address": "127.0.0.1"}, "Service": {"ID": "c1", "Port": 5001, "Meta": {"version": "v1"}}}
    broken = {"Node": {"Address": "127.0.0.1"}, "Service": {"ID": "c2", "Port": "not-a-port"}}
    warned: set[str] = set()
    with caplog.at_level(logging.WARNING, logger=catalog_module.__name__):
        for _ in range(3):
            endpoints = endpoints_from_health("catalog", [good, broken, {"Service": None}], warned)
    assert [e.instance_id for e in endpoints] == ["c1"]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "instance 'c2'" in messages[0] and "'catalog'" in messages[0]


def test_supervisor_logs_a_failure_restarts_with_backoff_and_reports_recovery(caplog):
    failing: dict[str, str] = {}
    health_changes: list[dict] = []
    attempts = []

    async def flaky() -> None:
        attempts.append(len(attempts))
        if len(attempts) < 3:
            raise RuntimeError(f"boom {len(attempts)}")
        supervisor.healthy("flaky")
        await asyncio.Event().wait()

    async def on_health() -> None:
        health_changes.append(dict(failing))

    supervisor = Supervisor(on_health, failing, backoff_min=0.01, backoff_max=0.02)

    async def scenario():
        task = asyncio.create_task(supervisor.run("flaky", flaky))
        while len(attempts) < 3 or failing:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        task.cancel()

    with caplog.at_level(logging.INFO, logger="mesh.xds.supervise"):
        asyncio.run(asyncio.wait_for(scenario(), 5))
    assert len(attempts) == 3 and not failing
    assert {"flaky": "RuntimeError: boom 1"} in health_changes and health_changes[-1] == {}
    messages = [r.getMessage() for r in caplog.records]
    assert sum("flaky failed" in m for m in messages) == 2 and "flaky recovered" in messages[-1]
