"""The control plane at catalog scale: 200 services x 5 instances in a real Consul, 200 synthetic
ADS clients (each calling 5 services, so each service has 5 subscribers) on the real control plane.
Every registration, deregistration and in-place change reaches every subscriber, none is lost, no
outage is reported that did not happen, and the Consul connections do not grow with the services.
(Speed is measured in benchmarks/controlplane.py, not here.)"""

from __future__ import annotations

import asyncio

import pytest

from support.fleet import ClientFleet, connections_to, deregister_all, register_all

pytestmark = pytest.mark.integration

SERVICES, INSTANCES, CLIENTS, CALLS_PER_CLIENT = 200, 5, 200, 5
MOST_CONSUL_CONNECTIONS = 8  # mesh/xds/catalog.py: two blocking queries and a small pool of reads
SYNC_TIMEOUT = 60.0  # seconds for a whole phase to reach every client (bounds the test, is no speed claim)


def service(s: int) -> str:
    return f"svc-{s:03d}"


def port(s: int, i: int) -> int:
    return 20000 + s * 10 + i


def test_every_change_reaches_every_subscribed_client_at_200_services(consul_agent, control_plane):
    services = [service(s) for s in range(SERVICES)]
    subscriptions = {c: [services[(c + k) % SERVICES] for k in range(CALLS_PER_CLIENT)] for c in range(CLIENTS)}
    registered: dict[str, dict[str, int]] = {name: {} for name in services}  # what Consul holds: id -> port

    def expected(name: str) -> frozenset:
        return frozenset(("127.0.0.1", p) for p in registered[name].values())

    def register(batch: list[tuple[str, str, int]]) -> None:
        register_all(consul_agent, batch)
        for name, instance_id, p in batch:
            registered[name][instance_id] = p

    async def scenario() -> None:
        fleet = ClientFleet(control_plane.address, subscriptions)
        await fleet.start()
        try:
            await fleet.until_synced(expected, SYNC_TIMEOUT)  # nothing registered: empty assignments

            await asyncio.to_thread(register, [(service(s), f"{service(s)}-{i}", port(s, i))
                                               for s in range(SERVICES) for i in range(INSTANCES)])
            await fleet.until_synced(expected, SYNC_TIMEOUT)

            gone = [f"{name}-{i}" for name in services for i in (0, 1)]
            await asyncio.to_thread(deregister_all, consul_agent, gone)
            for instance_id in gone:
                del registered[instance_id.rsplit("-", 1)[0]][instance_id]
            await fleet.until_synced(expected, SYNC_TIMEOUT)

            # same instance id, new port: a change the health state does not show
            await asyncio.to_thread(register, [(service(s), f"{service(s)}-4", port(s, 4) + 5)
                                               for s in range(0, SERVICES, 10)])
            await fleet.until_synced(expected, SYNC_TIMEOUT)

            # every registration reached every subscriber at some point, not only the final state
            for client in fleet.clients:
                for name in client.services:
                    seen = set().union(*(eps for _, s, eps in client.history if s == name))
                    s = services.index(name)
                    assert {("127.0.0.1", port(s, i)) for i in range(INSTANCES)} <= seen, (client.ads.node.id, name)
            assert not fleet.ended()
        finally:
            await fleet.stop()

    asyncio.run(asyncio.wait_for(scenario(), 6 * SYNC_TIMEOUT))

    held = connections_to(control_plane.proc.pid, consul_agent.ports["http"])
    assert 0 < held <= MOST_CONSUL_CONNECTIONS, f"{held} connections to Consul"
    messages = [(e["severity"], e["message"]) for e in control_plane.logs()]
    assert not [m for m in messages if "unreachable" in m[1]], "an outage that did not happen was reported"
    assert not [m for m in messages if m[0] in ("WARN", "ERROR")], [m for m in messages if m[0] in ("WARN", "ERROR")][:5]
