"""Many synthetic xDS clients and many Consul instances at once, for the control-plane scale test
and `benchmarks/controlplane.py`. The clients play nodes; the control plane and Consul are real.

    fleet = ClientFleet(cp.address, subscriptions)     # node index -> the services it calls
    await fleet.start(); await fleet.until_synced(expected)   # service -> {(address, port)}
    fleet.first_seen(service, endpoint, since)         # when every subscriber had it (or None)
    await fleet.stop()

    register_all(agent, instances, concurrency=16)     # [(service, instance id, port)], bounded
    connections_to(pid, port)                          # TCP connections a process holds to a port

Each client subscribes, as grpc does, to the listener `NAME:PORT`, the route configuration, the
cluster and the load assignment `outbound|PORT||NAME.NS.svc.cluster.local` of each of its services,
and ACKs every response with the names it holds; it records when each load assignment arrived.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc

from support.ads import CDS, EDS, LDS, RDS, AdsClient

__all__ = ["ClientFleet", "SyntheticClient", "connections_to", "eds_name", "register_all"]

SERVICE_PORT = 7000  # the port every synthetic service is dialled by

Endpoints = frozenset[tuple[str, int]]


def eds_name(service: str, namespace: str = "default") -> str:
    return f"outbound|{SERVICE_PORT}||{service}.{namespace}.svc.cluster.local"


class SyntheticClient:
    def __init__(self, target: str, index: int, services: Sequence[str]) -> None:
        self.ads = AdsClient(target, instance=f"client-{index}", service="synthetic")
        self.services = list(services)
        self.names = {
            LDS: [f"{s}:{SERVICE_PORT}" for s in services],
            RDS: [eds_name(s) for s in services],
            CDS: [eds_name(s) for s in services],
            EDS: [eds_name(s) for s in services],
        }
        self.endpoints: dict[str, Endpoints] = {}  # service -> endpoints last received
        self.history: list[tuple[float, str, Endpoints]] = []  # (time.time(), service, endpoints) per EDS
        self.responses = 0
        self.ended: BaseException | None = None
        self._service_of = {eds_name(s): s for s in services}

    async def run(self) -> None:
        async with self.ads as ads:
            for type_url in (LDS, RDS, CDS, EDS):
                await ads.send(type_url, self.names[type_url])
            try:
                while True:
                    response = await ads.call.read()
                    if response is grpc.aio.EOF:
                        raise ConnectionError("the control plane ended the stream")
                    self.responses += 1
                    if response.type_url == EDS:
                        self._took(response)
                    await ads.send(response.type_url, self.names[response.type_url], version=response.version_info,
                                   nonce=response.nonce)
            except BaseException as error:  # recorded; the fleet reports it
                self.ended = error
                raise

    def _took(self, response) -> None:
        now = time.time()
        for name, assignment in AdsClient.decode(response).items():
            service = self._service_of.get(name)
            if service is None:
                continue
            endpoints = frozenset((e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
                                  for locality in assignment.endpoints for e in locality.lb_endpoints)
            if self.endpoints.get(service) != endpoints:
                self.endpoints[service] = endpoints
                self.history.append((now, service, endpoints))


class ClientFleet:
    def __init__(self, target: str, subscriptions: Mapping[int, Sequence[str]]) -> None:
        self.clients = [SyntheticClient(target, index, services) for index, services in subscriptions.items()]
        self._tasks: list[asyncio.Task] = []

    async def start(self, concurrency: int = 50) -> None:
        """Open every client's stream, `concurrency` at a time."""
        for start in range(0, len(self.clients), concurrency):
            batch = self.clients[start:start + concurrency]
            self._tasks += [asyncio.create_task(client.run()) for client in batch]
            while any(client.responses == 0 and client.ended is None for client in batch):
                await asyncio.sleep(0.01)

    def ended(self) -> list[str]:
        return [f"{c.ads.node.id}: {c.ended!r}" for c in self.clients if c.ended is not None]

    def lagging(self, expected: Callable[[str], Endpoints]) -> list[tuple[str, str]]:
        """(node, service) pairs whose last load assignment differs from `expected(service)`."""
        return [(c.ads.node.id, s) for c in self.clients for s in c.services if c.endpoints.get(s) != expected(s)]

    async def until_synced(self, expected: Callable[[str], Endpoints], timeout: float, interval: float = 0.02) -> None:
        deadline = time.monotonic() + timeout
        while lagging := self.lagging(expected):
            assert not self.ended(), f"streams ended: {self.ended()[:3]}"
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(lagging)} subscriptions not synced after {timeout} s, e.g. {lagging[:3]}")
            await asyncio.sleep(interval)

    def subscribers(self, service: str) -> list[SyntheticClient]:
        return [c for c in self.clients if service in c.services]

    def arrival(self, client: SyntheticClient, service: str, has: Callable[[Endpoints], bool],
                since: float) -> float | None:
        """When `client` first received endpoints of `service` for which `has` holds, after `since`."""
        return next((t for t, s, eps in client.history if t >= since and s == service and has(eps)), None)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def register_all(agent, instances: Iterable[tuple[str, str, int]], concurrency: int = 16,
                 ttl: str = "1h") -> float:
    """Register every (service, instance id, port) with a passing TTL check, `concurrency` at a
    time; returns the seconds it took."""
    started = time.monotonic()

    def register(instance: tuple[str, str, int]) -> None:
        name, instance_id, port = instance
        agent.register(name, instance_id, port, ttl=ttl)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(register, instances))
    return time.monotonic() - started


def deregister_all(agent, instance_ids: Iterable[str], concurrency: int = 16) -> float:
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(agent.deregister, instance_ids))
    return time.monotonic() - started


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections process `pid` holds to 127.0.0.1:`port` (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    with open(f"/proc/{pid}/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == "01" and inode in inodes and int(remote.split(":")[1], 16) == port:
                count += 1
    return count
