"""The ADS protocol handling, driven message by message by a real grpcio client over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpc_health.v1 import health

from mesh.xds.catalog import Catalog, Endpoint
from mesh.xds.server import AdsServer, create_server
from mesh.xds.snapshot import SnapshotCache
from mesh.xds.translate import Policy, translate
from support.ads import CDS, EDS, LDS, RDS, AdsClient
from support.poll import apoll_until

SERVER_NAME = "grpc/server?xds.resource.listening_address=127.0.0.1:6001"


def catalog(*ports: int, others: tuple[str, ...] = ()) -> Catalog:
    services = {"catalog": [Endpoint(f"catalog-{p}", "127.0.0.1", p) for p in ports]}
    return Catalog.of({**services, **{name: [] for name in others}})


@contextlib.asynccontextmanager
async def ads_server(initial: Catalog | None = None):
    cache = SnapshotCache()
    if initial is not None:
        cache.update(translate(initial), Policy())
    ads = AdsServer(cache)
    server, port = create_server("127.0.0.1:0", ads, health.aio.HealthServicer())
    await server.start()
    try:
        yield cache, ads, f"127.0.0.1:{port}"
    finally:
        ads.close()
        await server.stop(0)


def publish(cache: SnapshotCache, new: Catalog) -> None:
    assert cache.update(translate(new), Policy())


def ports_in(assignment) -> list[int]:
    return sorted(e.endpoint.address.socket_address.port_value for loc in assignment.endpoints for e in loc.lb_endpoints)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def test_ack_is_recorded_and_not_answered():
    async def scenario():
        async with ads_server(catalog(5001)) as (cache, ads, target), AdsClient(target, "node-a", "orders") as c:
            first = await c.request(EDS, ["outbound|catalog"])
            assert (first.version_info, first.nonce) == ("1", "1")
            assert ports_in(c.decode(first)["outbound|catalog"]) == [5001]
            await c.ack(first)
            publish(cache, catalog(5001, 5002))
            pushed = await c.recv()  # the next message is the push: the ACK itself got no answer
            assert pushed.version_info == "2" and ports_in(c.decode(pushed)["outbound|catalog"]) == [5001, 5002]
            await c.ack(pushed)
            [status] = await apoll_until(lambda: ads.status()[0].acked.get(EDS) == "2" and ads.status())
            assert (status.node_id, status.workload, dict(status.acked)) == ("node-a", "orders", {EDS: "2"})

    run(scenario())


def test_nack_is_logged_and_the_stream_keeps_serving(caplog):
    async def scenario():
        async with ads_server(catalog(5001)) as (cache, ads, target), AdsClient(target, "node-b") as c:
            first = await c.request(CDS, ["outbound|catalog"])
            await c.ack(first)
            publish(cache, catalog(5001, others=("payments",)))
            second = await c.recv()
            with caplog.at_level(logging.WARNING, logger="mesh.xds.server"):
                await c.nack(second, "cluster outbound|catalog: bad lb_policy", last_good=first.version_info)
                # requests on a stream are handled in order: the answer to this one proves the NACK
                # was handled, and that it got no answer of its own
                await c.send(CDS, ["outbound|catalog", "outbound|payments"], version=first.version_info,
                             nonce=second.nonce)
                grown = await c.recv()
            assert grown.version_info == "2" and sorted(c.decode(grown)) == ["outbound|catalog", "outbound|payments"]
            [status] = ads.status()
            assert status.acked[CDS] == "1"  # still the last good one
            assert status.last_nack[CDS].version == "2"
            assert "bad lb_policy" in status.last_nack[CDS].reason
            await c.ack(grown)
            publish(cache, catalog(5001, others=("payments", "pricing")))
            third = await c.recv()  # the stream keeps serving
            assert third.version_info == "3" and len(c.decode(third)) == 2
            [record] = [r for r in caplog.records if "NACK" in r.getMessage()]
            assert record.levelno == logging.WARNING
            assert "node-b" in record.getMessage() and "Cluster" in record.getMessage()
            assert "bad lb_policy" in record.getMessage()

    run(scenario())


def test_stale_nonce_is_ignored():
    async def scenario():
        async with ads_server(catalog(5001, others=("payments", "pricing"))) as (cache, _, target), \
                AdsClient(target) as c:
            first = await c.request(EDS, ["outbound|catalog"])
            publish(cache, catalog(5001, 5002, others=("payments", "pricing")))
            pushed = await c.recv()
            # a request answering the older response, asking for more: stale, must change nothing
            await c.send(EDS, ["outbound|catalog", "outbound|payments"], version=first.version_info, nonce=first.nonce)
            await c.send(EDS, ["outbound|catalog", "outbound|pricing"], version=pushed.version_info, nonce=pushed.nonce)
            answer = await c.recv()
            assert answer.nonce != pushed.nonce
            assert sorted(c.decode(answer)) == ["outbound|catalog", "outbound|pricing"]

    run(scenario())


def test_growing_subscription_gets_every_subscribed_name_even_unknown_ones():
    async def scenario():
        async with ads_server(catalog(5001, others=("payments",))) as (_, _, target), AdsClient(target) as c:
            first = await c.request(LDS, ["catalog"])
            assert sorted(c.decode(first)) == ["catalog"]
            await c.send(LDS, ["catalog", "payments", "nosuch"], version=first.version_info, nonce=first.nonce)
            grown = await c.recv()
            assert sorted(c.decode(grown)) == ["catalog", "nosuch", "payments"]  # nosuch: a service with no endpoints
            await c.send(LDS, ["catalog", "payments", SERVER_NAME], version=grown.version_info, nonce=grown.nonce)
            with_server = c.decode(await c.recv())
            assert sorted(with_server) == sorted(["catalog", "payments", SERVER_NAME])
            empty = c.decode(await c.request(EDS, ["outbound|payments"]))
            assert not empty["outbound|payments"].endpoints  # sent, with no endpoints

    run(scenario())


def test_wildcard_listener_and_cluster_requests_get_everything():
    async def scenario():
        async with ads_server(catalog(5001, others=("payments",))) as (_, _, target), AdsClient(target) as c:
            assert sorted(c.decode(await c.request(CDS, []))) == ["outbound|catalog", "outbound|payments"]
            assert sorted(c.decode(await c.request(LDS, []))) == ["catalog", "payments"]

    run(scenario())


def test_resubscribing_after_a_restart_with_old_versions_is_answered():
    async def scenario():
        # a fresh control plane starts at version 1; the client last saw version 7 of the old one
        async with ads_server(catalog(5001)) as (_, _, target), AdsClient(target, "node-c") as c:
            for type_url, names in ((EDS, ["outbound|catalog"]), (RDS, ["catalog"]), (CDS, ["outbound|catalog"]),
                                    (LDS, ["catalog"])):
                response = await c.request(type_url, names, version="7")
                assert response.version_info == "1" and sorted(c.decode(response)) == names
        # even one that also carries a nonce of the old stream
        async with ads_server(catalog(5001)) as (_, _, target), AdsClient(target, "node-d") as c:
            await c.send(EDS, ["outbound|catalog"], version="7", nonce="12")
            assert (await c.recv()).version_info == "1"

    run(scenario())


def test_requests_before_the_first_snapshot_are_answered_when_it_arrives():
    async def scenario():
        async with ads_server() as (cache, _, target), AdsClient(target) as c:
            await c.send(LDS, ["catalog"])
            await c.send(EDS, ["outbound|catalog"])
            publish(cache, catalog(5001))
            got = {r.type_url: c.decode(r) for r in [await c.recv(), await c.recv()]}
            assert sorted(got[LDS]) == ["catalog"] and ports_in(got[EDS]["outbound|catalog"]) == [5001]

    run(scenario())


def test_new_snapshot_is_pushed_to_every_stream_and_only_for_changed_types():
    async def scenario():
        async with ads_server(catalog(5001)) as (cache, _, target):
            async with AdsClient(target, "n1") as one, AdsClient(target, "n2") as two:
                for c in (one, two):
                    await c.ack(await c.request(LDS, ["catalog"]))
                    await c.ack(await c.request(EDS, ["outbound|catalog"]))
                publish(cache, catalog(5001, 5002))
                for c in (one, two):
                    pushed = await c.recv()
                    assert pushed.type_url == EDS  # the listener did not change, so it is not re-sent
                    assert ports_in(c.decode(pushed)["outbound|catalog"]) == [5001, 5002]

    run(scenario())
