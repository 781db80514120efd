"""State-of-the-world ADS (`StreamAggregatedResources`) on grpcio's asyncio API.

Per stream and type URL it keeps the subscribed names, the nonce and version last sent, the
version last ACKed and the last NACK. The protocol rules it follows (xDS SotW, and what the
prototype saw grpcio, grpc-go and grpc-js do):
- a request whose nonce is not the one last sent for its type is stale and ignored: the client
  answers the newer response with its full subscription anyway;
- any other request (no nonce, or nothing sent yet on this stream) opens a subscription and is
  answered, whatever version_info it carries (clients re-subscribing after a control-plane
  restart carry the old one);
- an ACK or NACK that changes the names is answered; one that does not is only recorded;
- every response holds every subscribed name that exists (for LDS and CDS a missing name
  means "deleted"); empty LDS/CDS names are a wildcard;
- a new snapshot is pushed, per type (CDS, EDS, LDS, RDS in that order), to every stream whose
  last sent version of that type differs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator, Mapping

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from grpc_health.v1 import health_pb2_grpc

from mesh.xds.snapshot import Snapshot, SnapshotCache
from mesh.xds.translate import CLUSTER, ENDPOINT, LISTENER, ROUTE, pack

__all__ = ["AdsServer", "Nack", "NodeStatus", "create_server"]

log = logging.getLogger(__name__)

WILDCARD_TYPES = (LISTENER, CLUSTER)
# new clusters and their endpoints before the listeners and routes that may point at them
PUSH_ORDER = {CLUSTER: 0, ENDPOINT: 1, LISTENER: 2, ROUTE: 3}


def short(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]


@dataclasses.dataclass(frozen=True)
class Nack:
    version: str  # the version the client rejected
    reason: str


@dataclasses.dataclass(frozen=True)
class NodeStatus:
    node_id: str
    workload: str  # the node's cluster: the service it belongs to
    peer: str
    acked: Mapping[str, str]  # type URL -> last ACKed version
    last_nack: Mapping[str, Nack]  # type URL -> last NACK


@dataclasses.dataclass
class _Subscription:
    names: frozenset[str] = frozenset()
    wildcard: bool = False
    nonce: str = ""
    sent_version: str = ""
    acked_version: str = ""
    last_nack: Nack | None = None


class _Stream:
    _ids = itertools.count(1)

    def __init__(self, cache: SnapshotCache, peer: str) -> None:
        self.id = next(self._ids)
        self.peer = peer
        self.node_id = ""
        self.workload = ""
        self.subscriptions: dict[str, _Subscription] = {}
        self.responses: asyncio.Queue[discovery_pb2.DiscoveryResponse | None] = asyncio.Queue()
        self._cache = cache
        self._nonces = itertools.count(1)

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> None:
        if request.HasField("node") and not self.node_id:
            self.node_id, self.workload = request.node.id, request.node.cluster
            log.info("ads stream %d from node %r (%s)", self.id, self.node_id, request.node.user_agent_name)
        type_url = request.type_url
        sub = self.subscriptions.setdefault(type_url, _Subscription())
        answer = bool(request.response_nonce) and request.response_nonce == sub.nonce  # ACK/NACK of our last
        if request.response_nonce and sub.nonce and not answer:
            log.debug("ads stream %d: stale nonce %s for %s ignored", self.id, request.response_nonce, short(type_url))
            return
        if answer and request.HasField("error_detail"):
            sub.last_nack = Nack(sub.sent_version, request.error_detail.message)
            log.warning("xDS NACK from node %r for %s version %s: %s", self.node_id, short(type_url), sub.sent_version,
                        request.error_detail.message, extra={"node_id": self.node_id, "type_url": type_url})
        elif answer:
            sub.acked_version = request.version_info
        names = frozenset(request.resource_names) - {"*"}
        wildcard = type_url in WILDCARD_TYPES and (not request.resource_names or "*" in request.resource_names)
        changed = (names, wildcard) != (sub.names, sub.wildcard)
        sub.names, sub.wildcard = names, wildcard
        if (changed or not answer) and self._cache.current is not None:
            self._respond(type_url, sub, self._cache.current)

    def on_snapshot(self, snapshot: Snapshot) -> None:
        for type_url in sorted(self.subscriptions, key=lambda t: PUSH_ORDER.get(t, len(PUSH_ORDER))):
            sub = self.subscriptions[type_url]
            if sub.sent_version != snapshot.version_of(type_url):
                self._respond(type_url, sub, snapshot)

    def _respond(self, type_url: str, sub: _Subscription, snapshot: Snapshot) -> None:
        if not sub.names and not sub.wildcard:
            return  # nothing subscribed (an unsubscribe of RDS/EDS needs no answer)
        resources = snapshot.resolve(type_url, None if sub.wildcard else sub.names, self.workload)
        sub.nonce, sub.sent_version = str(next(self._nonces)), snapshot.version_of(type_url)
        log.debug("ads stream %d: %s version %s nonce %s: %s", self.id, short(type_url), sub.sent_version, sub.nonce,
                  sorted(resources))
        self.responses.put_nowait(discovery_pb2.DiscoveryResponse(
            version_info=sub.sent_version, type_url=type_url, nonce=sub.nonce,
            resources=[pack(resources[name]) for name in sorted(resources)]))

    def status(self) -> NodeStatus:
        acked = {t: s.acked_version for t, s in self.subscriptions.items() if s.acked_version}
        nacks = {t: s.last_nack for t, s in self.subscriptions.items() if s.last_nack}
        return NodeStatus(self.node_id, self.workload, self.peer, acked, nacks)


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self, cache: SnapshotCache) -> None:
        self._cache = cache
        self._streams: set[_Stream] = set()

    def status(self) -> list[NodeStatus]:
        """ACK/NACK state of every connected xDS client, ordered by node id."""
        return sorted((s.status() for s in self._streams), key=lambda n: (n.node_id, n.peer))

    def close(self) -> None:
        """End every open stream (the clients reconnect to whichever control plane is up)."""
        for stream in self._streams:
            stream.responses.put_nowait(None)

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        stream = _Stream(self._cache, context.peer())

        async def read() -> None:
            try:
                async for request in request_iterator:
                    try:
                        stream.on_request(request)
                    except Exception:  # a bug: say so, and keep the stream
                        log.exception("ads stream %d: failed to handle a %s request", stream.id, request.type_url)
            except Exception as error:  # noqa: BLE001 - the client went away mid-read
                log.debug("ads stream %d: reader ended: %r", stream.id, error)
            finally:
                stream.responses.put_nowait(None)

        self._streams.add(stream)
        self._cache.subscribe(stream.on_snapshot)
        reader = asyncio.create_task(read())
        try:
            while (response := await stream.responses.get()) is not None:
                yield response
        finally:
            reader.cancel()
            self._cache.unsubscribe(stream.on_snapshot)
            self._streams.discard(stream)
            log.info("ads stream %d from node %r closed", stream.id, stream.node_id)


def create_server(address: str, ads: AdsServer, health: health_pb2_grpc.HealthServicer) -> tuple[grpc.aio.Server, int]:
    """An unstarted server with ADS and health on `address` (port 0 picks one); returns the port."""
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port(address)
    return server, port
