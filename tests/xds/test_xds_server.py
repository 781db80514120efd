"""The ADS protocol handling, driven message by message by a real grpcio client over loopback
against the real store, reconciler and ADS server (no Consul: the catalog is handed over)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc
from grpc_health.v1 import health, health_pb2_grpc

from mesh.xds.catalog import Catalog, Endpoint
from mesh.xds.reconcile import Reconciler
from mesh.xds.resources import ResourceStore
from mesh.xds.server import AdsServer, create_server
from support.ads import CDS, EDS, LDS, RDS, AdsClient
from support.poll import apoll_until

PORT = 7000  # the service port clients dial; instances listen on their own
CATALOG_EDS = f"outbound|{PORT}||catalog.default.svc.cluster.local"
PAYMENTS_EDS = f"outbound|{PORT}||payments.default.svc.cluster.local"
PRICING_EDS = f"outbound|{PORT}||pricing.default.svc.cluster.local"
SERVER_NAME = "xds.istio.io/grpc/lds/inbound/127.0.0.1:6001"


def catalog(*ports: int, others: tuple[str, ...] = ()) -> Catalog:
    services = {"catalog": [Endpoint(f"catalog-{p}", "127.0.0.1", p) for p in ports]}
    return Catalog.of({**services, **{name: [] for name in others}})


class Plane:
    """The control plane's pieces in process: publish(catalog) is what a Consul change does."""

    def __init__(self, **ads_options) -> None:
        self.store = ResourceStore()
        self.reconciler = Reconciler(self.store, "default", on_rebuilt=lambda: self.ads.notify())
        self.ads = AdsServer(self.store, "default", stale_reasons=self.reconciler.failures, **ads_options)

    def publish(self, new: Catalog) -> None:
        self.reconciler.set_catalog(new)
        self.reconciler.rebuild()


@contextlib.asynccontextmanager
async def ads_server(initial: Catalog | None = None, **ads_options):
    plane = Plane(**ads_options)
    if initial is not None:
        plane.publish(initial)
    server, port = create_server("127.0.0.1:0",
                                 (ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server, plane.ads),
                                 (health_pb2_grpc.add_HealthServicer_to_server, health.aio.HealthServicer()))
    await server.start()
    try:
        yield plane, f"127.0.0.1:{port}"
    finally:
        plane.ads.close()
        await server.stop(0)


def ports_in(assignment) -> list[int]:
    return sorted(e.endpoint.address.socket_address.port_value
                  for loc in assignment.endpoints for e in loc.lb_endpoints)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def test_ack_is_recorded_and_not_answered():
    async def scenario():
        async with ads_server(catalog(5001)) as (plane, target), AdsClient(target, "node-a", "orders") as c:
            first = await c.request(EDS, [CATALOG_EDS])
            assert ports_in(c.decode(first)[CATALOG_EDS]) == [5001]
            await c.ack(first)
            plane.publish(catalog(5001, 5002))
            pushed = await c.recv()  # the next message is the push: the ACK itself got no answer
            assert int(pushed.version_info) > int(first.version_info)
            assert ports_in(c.decode(pushed)[CATALOG_EDS]) == [5001, 5002]
            await c.ack(pushed)
            [status] = await apoll_until(lambda: plane.ads.status()[0].acked.get(EDS) == pushed.version_info
                                         and plane.ads.status())
            assert status.node_id == "sidecar~127.0.0.1~node-a.default~default.svc.cluster.local"
            assert status.workload == "orders"
            [resource] = status.resources
            assert (resource.name, resource.state, resource.acked) == (CATALOG_EDS, "ACKED", resource.sent)

    run(scenario())


def test_nack_is_logged_and_the_stream_keeps_serving(caplog):
    async def scenario():
        async with ads_server(catalog(5001)) as (plane, target), AdsClient(target, "node-b") as c:
            first = await c.request(EDS, [CATALOG_EDS])
            await c.ack(first)
            plane.publish(catalog(5001, 5002))
            second = await c.recv()
            with caplog.at_level(logging.WARNING, logger="mesh.xds.server"):
                await c.nack(second, "bad endpoint", last_good=first.version_info)
                # requests on a stream are handled in order: the answer to this one proves the NACK
                # was handled, and that it got no answer of its own
                await c.send(EDS, [CATALOG_EDS, PAYMENTS_EDS], version=first.version_info, nonce=second.nonce)
                grown = await c.recv()
            assert sorted(c.decode(grown)) == [CATALOG_EDS, PAYMENTS_EDS]
            [status] = plane.ads.status()
            assert status.acked[EDS] == first.version_info  # still the last good one
            assert status.last_nack[EDS].version == second.version_info
            assert "bad endpoint" in status.last_nack[EDS].reason
            await c.ack(grown)
            plane.publish(catalog(5001, 5002, 5003))
            third = await c.recv()  # the stream keeps serving
            assert ports_in(c.decode(third)[CATALOG_EDS]) == [5001, 5002, 5003]
            [record] = [r for r in caplog.records if "NACK" in r.getMessage()]
            assert record.levelno == logging.WARNING
            assert "node-b" in record.getMessage() and "ClusterLoadAssignment" in record.getMessage()
            assert "bad endpoint" in record.getMessage()

    run(scenario())


def test_stale_nonce_is_ignored():
    async def scenario():
        async with ads_server(catalog(5001, others=("payments", "pricing"))) as (plane, target), \
                AdsClient(target) as c:
            first = await c.request(EDS, [CATALOG_EDS])
            await c.ack(first)
            plane.publish(catalog(5001, 5002, others=("payments", "pricing")))
            pushed = await c.recv()
            # a request answering the older response, asking for more: stale, must change nothing
            await c.send(EDS, [CATALOG_EDS, PAYMENTS_EDS], version=first.version_info, nonce=first.nonce)
            await c.send(EDS, [CATALOG_EDS, PRICING_EDS], version=pushed.version_info, nonce=pushed.nonce)
            answer = await c.recv()
            assert answer.nonce != pushed.nonce
            assert sorted(c.decode(answer)) == [CATALOG_EDS, PRICING_EDS]

    run(scenario())


def test_every_name_form_istiod_answers_resolves_to_the_one_route_and_cluster():
    async def scenario():
        async with ads_server(catalog(5001)) as (_, target), AdsClient(target) as c:
            forms = [f"catalog:{PORT}", f"catalog.default:{PORT}", f"catalog.default.svc:{PORT}",
                     f"catalog.default.svc.cluster.local:{PORT}"]
            listeners = c.decode(await c.request(LDS, forms))
            assert sorted(listeners) == sorted(forms)
            [route_name] = {AdsClient.rds_name(listener) for listener in listeners.values()}
            assert route_name == CATALOG_EDS  # istiod names the route configuration like the cluster
            [host] = c.decode(await c.request(RDS, [route_name]))[route_name].virtual_hosts
            assert set(forms) <= set(host.domains)  # gRPC matches the dialled authority against these
            assert host.routes[0].route.cluster == CATALOG_EDS
            cluster = c.decode(await c.request(CDS, [CATALOG_EDS]))[CATALOG_EDS]
            assert cluster.eds_cluster_config.service_name == CATALOG_EDS
            # a portless name is not one istiod answers: it does not exist
            assert c.decode(await c.request(LDS, ["catalog"])) == {}

    run(scenario())


def test_growing_subscription_gets_every_subscribed_name_even_unknown_ones():
    async def scenario():
        async with ads_server(catalog(5001, others=("payments",))) as (_, target), AdsClient(target) as c:
            first = await c.request(LDS, [f"catalog:{PORT}"])
            assert sorted(c.decode(first)) == [f"catalog:{PORT}"]
            names = [f"catalog:{PORT}", f"payments:{PORT}", "nosuch:9"]
            await c.send(LDS, names, version=first.version_info, nonce=first.nonce)
            grown = await c.recv()
            assert sorted(c.decode(grown)) == sorted(names)  # nosuch: a service with no endpoints
            await c.send(LDS, [*names, SERVER_NAME], version=grown.version_info, nonce=grown.nonce)
            with_server = c.decode(await c.recv())
            assert sorted(with_server) == sorted([*names, SERVER_NAME])
            empty = c.decode(await c.request(EDS, [PAYMENTS_EDS, "outbound|9||nosuch.default.svc.cluster.local"]))
            assert all(not assignment.endpoints for assignment in empty.values()) and len(empty) == 2

    run(scenario())


def test_unknown_service_gets_its_endpoints_when_it_registers():
    async def scenario():
        async with ads_server(catalog(5001)) as (plane, target), AdsClient(target) as c:
            await c.ack(await c.request(EDS, [PAYMENTS_EDS]))
            payments = [Endpoint("payments-1", "127.0.0.1", 5100)]
            plane.publish(Catalog.of({**catalog(5001).services, "payments": payments}))
            pushed = await c.recv()
            assert ports_in(c.decode(pushed)[PAYMENTS_EDS]) == [5100]

    run(scenario())


def test_resubscribing_after_a_restart_with_old_versions_is_answered():
    async def scenario():
        # a fresh control plane starts its versions again; the client last saw version 7 of the old one
        async with ads_server(catalog(5001)) as (_, target), AdsClient(target, "node-c") as c:
            for type_url, names in ((EDS, [CATALOG_EDS]), (RDS, [CATALOG_EDS]), (CDS, [CATALOG_EDS]),
                                    (LDS, [f"catalog:{PORT}"])):
                response = await c.request(type_url, names, version="7")
                assert sorted(c.decode(response)) == names
        # even one that also carries a nonce of the old stream
        async with ads_server(catalog(5001)) as (_, target), AdsClient(target, "node-d") as c:
            await c.send(EDS, [CATALOG_EDS], version="7", nonce="12")
            assert CATALOG_EDS in c.decode(await c.recv())

    run(scenario())


def test_requests_before_the_first_catalog_are_answered_when_it_arrives():
    async def scenario():
        async with ads_server() as (plane, target), AdsClient(target) as c:
            await c.send(LDS, [f"catalog:{PORT}"])
            await c.send(EDS, [CATALOG_EDS])
            await c.silent_for(0.3)  # no answer yet: empty endpoints would fail calls
            plane.publish(catalog(5001))
            got = {r.type_url: c.decode(r) for r in [await c.recv(), await c.recv()]}
            assert sorted(got[LDS]) == [f"catalog:{PORT}"] and ports_in(got[EDS][CATALOG_EDS]) == [5001]

    run(scenario())


def test_new_catalog_is_pushed_to_every_stream_and_only_for_changed_resources():
    async def scenario():
        async with (ads_server(catalog(5001)) as (plane, target),
                    AdsClient(target, "n1") as one, AdsClient(target, "n2") as two):
            for c in (one, two):
                await c.ack(await c.request(LDS, [f"catalog:{PORT}"]))
                await c.ack(await c.request(EDS, [CATALOG_EDS]))
            plane.publish(catalog(5001, 5002))
            for c in (one, two):
                pushed = await c.recv()
                assert pushed.type_url == EDS  # the listener did not change, so it is not re-sent
                assert ports_in(c.decode(pushed)[CATALOG_EDS]) == [5001, 5002]

    run(scenario())


def test_one_response_in_flight_per_type_coalesced_to_the_newest():
    async def scenario():
        async with ads_server(catalog(5001)) as (plane, target), AdsClient(target) as c:
            first = await c.request(EDS, [CATALOG_EDS])
            for ports in ((5001, 5002), (5001, 5002, 5003), (5001, 5002, 5003, 5004)):
                plane.publish(catalog(*ports))  # three changes while the first response is not ACKed
            await c.silent_for(0.5)  # nothing while the first response is in flight
            await c.ack(first)
            newest = await c.recv()  # one response with the newest state, not three
            assert ports_in(c.decode(newest)[CATALOG_EDS]) == [5001, 5002, 5003, 5004]
            await c.ack(newest)
            await c.silent_for(0.3)  # nothing changed since: nothing sent

    run(scenario())


def test_a_client_that_stops_answering_is_dropped_once_newer_state_waits(caplog):
    unacked_timeout = 0.3

    async def scenario():
        async with ads_server(catalog(5001), unacked_timeout=unacked_timeout) as (plane, target), \
                AdsClient(target, "idle") as idle, AdsClient(target, "silent") as silent, \
                AdsClient(target, "reader") as reader:
            await idle.request(EDS, [CATALOG_EDS])  # never answered, and nothing newer comes for it
            await reader.ack(await reader.request(EDS, [CATALOG_EDS]))
            await asyncio.sleep(unacked_timeout * 2)
            assert any("idle" in n.node_id for n in plane.ads.status()), "a client that lacks nothing was dropped"

            await silent.request(LDS, [f"catalog:{PORT}"])  # neither response is ever answered;
            await asyncio.sleep(unacked_timeout / 3)  # the later one, which alone gets newer state,
            await silent.request(EDS, [CATALOG_EDS])  # is overdue only after the first
            plane.publish(catalog(5001, 5002))
            newest = await reader.recv()
            assert ports_in(reader.decode(newest)[CATALOG_EDS]) == [5001, 5002]
            await reader.ack(newest)
            nodes = await apoll_until(lambda: sorted(n.node_id.split("~")[2] for n in plane.ads.status())
                                      if len(plane.ads.status()) == 1 else None,
                                      timeout=5, message="the silent and the idle streams to be dropped")
            assert nodes == ["reader.default"]
            for dropped in (idle, silent):
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await dropped.recv(timeout=1)  # the end of its stream
                assert await dropped.call.code() == grpc.StatusCode.UNAVAILABLE
            plane.publish(catalog(5002))
            assert ports_in(reader.decode(await reader.recv())[CATALOG_EDS]) == [5002]  # the others keep flowing

    with caplog.at_level(logging.WARNING, logger="mesh.xds.server"):
        run(scenario())
    warnings = sorted(r.getMessage() for r in caplog.records if "unanswered" in r.getMessage())
    assert len(warnings) == 2 and {"idle", "silent"} == {w.split("~")[2].split(".")[0] for w in warnings}, warnings
    assert all("ClusterLoadAssignment" in w for w in warnings)
