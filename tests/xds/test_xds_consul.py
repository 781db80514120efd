"""The control plane as `python -m mesh.xds` against a real Consul agent, observed through the
real ADS stream and real gRPC clients and servers."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from support.ads import EDS, LDS, AdsClient
from support.backends import start_catalog_backend
from support.poll import poll_until
from support.ports import free_port
from support.xds import write_bootstrap

pytestmark = pytest.mark.integration


SERVICE_PORT = 7000  # the port clients dial catalog by; each instance listens on its own
CATALOG_TARGET = f"catalog:{SERVICE_PORT}"
CATALOG_EDS = f"outbound|{SERVICE_PORT}||catalog.default.svc.cluster.local"


def eds_ports(resources: dict, name: str = CATALOG_EDS) -> list[int] | None:
    """Endpoint ports of one load assignment; None if the response did not include it."""
    if name not in resources:
        return None
    return sorted(e.endpoint.address.socket_address.port_value for loc in resources[name].endpoints
                  for e in loc.lb_endpoints)


def probe_backends(proc, since: float = 0.0) -> list[str]:
    """What a probe saw since `since`: backend names, or "error: ..." for failed calls."""
    seen = []
    for line in proc.log_lines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry["t"] >= since:
                seen.append(entry.get("backend") or f"error: {entry['error']}")
    return seen


def test_serving_only_once_the_first_catalog_is_loaded(consul_agent, start_control_plane):
    consul_agent.stop()
    cp = start_control_plane(consul_agent.http_addr, wait=False)
    # the health service answers before Consul does, and says NOT_SERVING
    assert poll_until(lambda: cp.health(), 15, 0.05, "health answer") == "NOT_SERVING"
    assert cp.health("envoy.service.discovery.v3.AggregatedDiscoveryService") == "NOT_SERVING"
    consul_agent.start()
    cp.wait_serving()
    assert cp.health("envoy.service.discovery.v3.AggregatedDiscoveryService") == "SERVING"


def test_passing_instances_become_endpoints(consul_agent, control_plane):
    async def scenario():
        async with AdsClient(control_plane.address, "test-endpoints", "orders") as ads:
            consul_agent.register("catalog", "catalog-1", 7001, meta={"version": "v1", "language": "python"})
            await ads.send(LDS, [CATALOG_TARGET])
            await ads.send(EDS, [CATALOG_EDS])
            await ads.until(EDS, lambda r: eds_ports(r) == [7001])

            consul_agent.register("catalog", "catalog-2", 7002, passing=False)  # critical: not an endpoint
            consul_agent.register("catalog", "catalog-3", 7003)  # registered after it, so seen after it
            await ads.until(EDS, lambda r: eds_ports(r) == [7001, 7003])
            consul_agent.ttl_pass("catalog-2")
            await ads.until(EDS, lambda r: eds_ports(r) == [7001, 7002, 7003])
            consul_agent.ttl_fail("catalog-1")
            await ads.until(EDS, lambda r: eds_ports(r) == [7002, 7003])
            consul_agent.deregister("catalog-2")
            consul_agent.deregister("catalog-3")
            # no passing instance left, still registered: the listener stays, the assignment is empty
            await ads.until(EDS, lambda r: eds_ports(r) == [])
            consul_agent.deregister("catalog-1")
            # Gone from Consul altogether: still a service with no endpoints, never "does not exist"
            # (nothing changed for this client, so nothing is pushed; a new client gets it all)
            async with AdsClient(control_plane.address, "test-endpoints-late", "orders") as late:
                assert CATALOG_TARGET in late.decode(await late.request(LDS, [CATALOG_TARGET]))
                assert eds_ports(late.decode(await late.request(EDS, [CATALOG_EDS]))) == []
            consul_agent.register("catalog", "catalog-4", 7004)
            await ads.until(EDS, lambda r: eds_ports(r) == [7004])

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_sigterm_reports_not_serving_ends_streams_and_exits_0(control_plane):
    async def scenario():
        async with grpc.aio.insecure_channel(control_plane.address) as channel, \
                AdsClient(control_plane.address, "test-sigterm") as ads:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            await ads.request(LDS, [])
            control_plane.proc.send_signal(signal.SIGTERM)
            assert (await asyncio.wait_for(watch.read(), 5)).status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await asyncio.wait_for(ads.call.read(), 5) is grpc.aio.EOF  # the ADS stream was ended
            assert await ads.call.code() == grpc.StatusCode.OK

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert control_plane.proc.popen.wait(10) == 0
    messages = [e["message"] for e in control_plane.logs()]
    assert messages.index("stopping") < messages.index("stopped") == len(messages) - 1


@pytest.mark.parametrize("language", ["python", "go"])
def test_xds_managed_server_gets_its_listener(language, consul_agent, control_plane, procs, tmp_path, request):
    """A real xDS-managed server (grpcio / grpc-go) accepts the server listener and serves.
    (grpc-js's XdsServer binds every interface whatever host it is given, so it is not run here.)"""
    port = free_port()
    bootstrap = write_bootstrap(tmp_path / "server-bootstrap.json", control_plane.address,
                                instance_id="catalog-x1", service="catalog")
    command = {
        "python": lambda: [sys.executable, str(request.getfixturevalue("python_xds_server")), "--port", str(port),
                           "--name", "x1"],
        "go": lambda: [str(request.getfixturevalue("go_probe")), "-serve-port", str(port), "-name", "x1"],
    }[language]()
    server = procs.start(f"xds-server-{language}", command, env={"GRPC_XDS_BOOTSTRAP": str(bootstrap)})

    def call() -> str:
        assert server.alive(), "the server exited"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = catalog_pb2_grpc.CatalogServiceStub(channel)
            return stub.GetProduct(catalog_pb2.GetProductRequest(id="p"), timeout=1).product.name

    # an xDS-managed server refuses connections until it has accepted its listener
    assert poll_until(call, 20, 0.1, f"the xDS-managed {language} server to serve") == "x1"
    assert not [e for e in control_plane.logs() if "NACK" in e["message"]]


def test_keeps_serving_through_a_consul_outage(consul_agent, control_plane, procs, tmp_path, python_probe):
    backends = [start_catalog_backend(name) for name in ("a", "b")]
    try:
        (_, port_a), (_, port_b) = backends
        consul_agent.register("catalog", "catalog-a", port_a)
        bootstrap = write_bootstrap(tmp_path / "bootstrap.json", control_plane.address, instance_id="probe-1",
                                    service="orders")
        env = {"GRPC_XDS_BOOTSTRAP": str(bootstrap)}
        probe_args = [sys.executable, str(python_probe), "--target", f"xds:///{CATALOG_TARGET}", "--interval-ms", "20"]
        probe = procs.start("probe-before", probe_args, env=env)
        poll_until(lambda: "a" in probe_backends(probe), 20, 0.05, "the probe to reach a")

        consul_agent.stop()

        def outage_warnings() -> list[dict]:
            return [e for e in control_plane.logs() if "consul unreachable" in e["message"]]

        poll_until(outage_warnings, 10, 0.05, "the outage to be logged")
        # a client started during the outage gets the last known endpoints from the control plane
        late_bootstrap = write_bootstrap(tmp_path / "late.json", control_plane.address, instance_id="probe-2",
                                         service="orders")
        late = procs.start("probe-during-outage", probe_args, env={"GRPC_XDS_BOOTSTRAP": str(late_bootstrap)})
        poll_until(lambda: len(probe_backends(late)) >= 10, 20, 0.05, "the late probe to make 10 calls")
        assert set(probe_backends(late)) == {"a"}, "a client started during the outage got no endpoints"
        assert set(probe_backends(probe)) == {"a"}, "a client lost its endpoints during the outage"
        # once per outage, not once per failed query: the watches kept retrying while the late probe ran
        [warning] = outage_warnings()
        assert warning["severity"] == "WARN"

        consul_agent.start()  # same ports; a dev agent comes back empty, so instances register again
        poll_until(lambda: any("consul reachable again" in e["message"] for e in control_plane.logs()), 15, 0.05,
                   "the control plane to notice Consul is back")
        consul_agent.register("catalog", "catalog-a", port_a)
        consul_agent.register("catalog", "catalog-b", port_b)
        poll_until(lambda: {"a", "b"} <= set(probe_backends(probe)[-20:]), 15, 0.05, "the probe to use a and b")
    finally:
        for server, _ in backends:
            server.stop(0)
