"""State-of-the-world ADS (`StreamAggregatedResources`) on grpcio's asyncio API.

Each stream is one node's view: per type URL its subscribed names, what it was last sent (name ->
resource version), what it last ACKed, and its last NACK. The node's snapshot is its
subscriptions resolved in the shared `ResourceStore` (so keyed by exactly what its resources
depend on: the names, its namespace, its workload identity); resources are serialized once there.

Flow control: at most one response per type is in flight (sent, not yet ACKed or NACKed). While
one is, changes only mark the stream; when the answer comes, the stream sends the newest state
if it differs from what the client has. Nothing is queued, so a client that stops reading costs
a fixed amount of memory, and one that leaves a response unanswered (no ACK, no NACK) for
`unacked_timeout` seconds while newer state waits for it is dropped, with a warning: it has
stopped reading (or is stuck), and a client that reads again reconnects and re-subscribes, as
every xDS client does when its stream ends.

The protocol rules (xDS SotW, and what the prototype saw grpcio, grpc-go and grpc-js do):
- a request whose nonce is not the one last sent for its type is stale and ignored: the client
  answers the newer response with its full subscription anyway;
- a request without a nonce opens (or reopens) a subscription and is answered, whatever
  version_info it carries (clients re-subscribing after a control-plane restart carry the old one);
- an ACK or NACK that changes the names is answered; one that does not is answered only if a
  resource changed meanwhile;
- every response holds every subscribed name that resolves (for LDS and CDS a missing name
  means "deleted"); a client name the catalog does not know resolves to a service with no
  endpoints, never "does not exist";
- responses go out per type in the order CDS, EDS, LDS, RDS (clusters before what points at them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format

from mesh.xds.bootstrap import NodeIdentity
from mesh.xds.names import ServiceKey, parse_server_listener
from mesh.xds.resources import Key, Resource, ResourceStore
from mesh.xds.translate import CLUSTER, ENDPOINT, LISTENER, ROUTE, WorkloadIdentity

__all__ = ["AdsServer", "Nack", "NodeStatus", "ResourceStatus", "create_server"]

log = logging.getLogger(__name__)

UNACKED_TIMEOUT = 30.0  # seconds a response may stay unanswered while newer state waits
WILDCARD_TYPES = (LISTENER, CLUSTER)
PUSH_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)


def short(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]


@dataclasses.dataclass(frozen=True)
class Nack:
    version: str  # the version the client rejected
    reason: str


@dataclasses.dataclass(frozen=True)
class ResourceStatus:
    """One subscribed resource of one node, as CSDS reports it."""

    type_url: str
    name: str
    sent: str  # version last sent ("" if never)
    acked: str  # version last ACKed ("" if never)
    state: str  # REQUESTED (not answered yet), ACKED, NACKED
    in_flight: bool  # sent, no ACK/NACK yet
    nack: Nack | None
    stale_reason: str  # the control plane could not update it (translation failed), else ""
    resource: Resource | None


@dataclasses.dataclass(frozen=True)
class NodeStatus:
    node: base_pb2.Node
    node_id: str
    workload: str  # the service the node belongs to
    peer: str
    acked: Mapping[str, str]  # type URL -> version_info last ACKed
    last_nack: Mapping[str, Nack]  # type URL -> last NACK
    resources: tuple[ResourceStatus, ...]


@dataclasses.dataclass
class _Subscription:
    names: frozenset[str] = frozenset()
    wildcard: bool = False
    nonce: str = ""  # of the last response
    sent_version: str = ""  # version_info of the last response
    in_flight: bool = False
    sent_at: float = 0.0  # monotonic time of the last response
    must_answer: bool = False
    sent: dict[str, int] = dataclasses.field(default_factory=dict)  # name -> version, last response
    acked: dict[str, int] = dataclasses.field(default_factory=dict)  # name -> version, last ACKed response
    acked_version: str = ""
    last_nack: Nack | None = None
    nacked_names: frozenset[str] = frozenset()


class _Stream:
    _ids = itertools.count(1)

    def __init__(self, server: AdsServer, peer: str) -> None:
        self.id = next(self._ids)
        self.peer = peer
        self.node = base_pb2.Node()
        self.identity = NodeIdentity.parse("", "", {})
        self.workload_identity = WorkloadIdentity.of(self.identity.namespace, {})
        self.c_core = False
        self.subscriptions: dict[str, _Subscription] = {}
        self.wake = asyncio.Event()
        self.closed = False
        self.dropping = ""  # why the sweeper is closing it (its client stopped answering)
        self.warned_foreign = False
        self._server = server
        self._nonces = itertools.count(1)

    @property
    def node_id(self) -> str:
        return str(self.node.id)

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> None:
        if request.HasField("node") and not self.node.id:
            self._identify(request.node)
        type_url = request.type_url
        sub = self.subscriptions.setdefault(type_url, _Subscription())
        if request.response_nonce and request.response_nonce != sub.nonce and sub.nonce:
            # an answer to an older response: the newer one is on its way
            log.debug("ads stream %d: stale nonce %s for %s ignored", self.id, request.response_nonce, short(type_url))
            return
        names = frozenset(request.resource_names) - {"*"}
        wildcard = type_url in WILDCARD_TYPES and (not request.resource_names or "*" in request.resource_names)
        if request.response_nonce and sub.nonce and not sub.in_flight:
            # the last response was answered already: this only changes the subscription
            sub.must_answer = sub.must_answer or (names, wildcard) != (sub.names, sub.wildcard)
        elif request.response_nonce and sub.nonce:
            sub.in_flight = False
            if request.HasField("error_detail"):
                sub.last_nack = Nack(sub.sent_version, request.error_detail.message)
                sub.nacked_names = frozenset(sub.sent)
                log.warning("xDS NACK from node %r for %s version %s: %s", self.node.id, short(type_url),
                            sub.last_nack.version, request.error_detail.message,
                            extra={"node_id": self.node.id, "type_url": type_url})
            else:
                sub.acked, sub.acked_version = dict(sub.sent), request.version_info
                sub.last_nack, sub.nacked_names = None, frozenset()
            sub.must_answer = (names, wildcard) != (sub.names, sub.wildcard)
        else:  # a new subscription, or one reopened after a restart of either side
            sub.in_flight, sub.must_answer = False, True
        sub.names, sub.wildcard = names, wildcard
        self.wake.set()

    def _identify(self, node: base_pb2.Node) -> None:
        self.node = node
        metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
        self.identity = NodeIdentity.parse(node.id, node.cluster, metadata)
        namespace = self.identity.namespace or self._server.namespace
        self.workload_identity = WorkloadIdentity.of(namespace, self.identity.labels)
        # grpcio (gRPC C-core) fires max_stream_duration early: its routes carry timeouts otherwise
        self.c_core = "C-core" in node.user_agent_name
        log.info("ads stream %d from node %r (%s)", self.id, node.id, node.user_agent_name)
        if self._server.on_node is not None:
            try:  # before the first response: the node's certificate files exist once it hears anything
                self._server.on_node(self.identity)
            except Exception:  # the node still gets its xDS resources; say why it has no certificate
                log.exception("ads stream %d: preparing node %r failed", self.id, node.id,
                              extra={"node_id": node.id})

    def _resolve(self, type_url: str, sub: _Subscription) -> dict[str, Resource]:
        if sub.wildcard:
            # names carry the port, so "everything" cannot be listed; istiod's proxyless
            # generator sends nothing for a wildcard either
            return {}
        store, namespace = self._server.store, self.workload_identity.namespace
        found = {}
        for name in sorted(sub.names):
            if type_url == LISTENER and namespace != self._server.namespace and parse_server_listener(name):
                self._foreign_workload(name)
                continue
            resource = store.get(type_url, name, namespace, self.workload_identity, self.c_core)
            if resource is not None:
                found[name] = resource
        return found

    def _foreign_workload(self, name: str) -> None:
        """This control plane governs the workloads of one namespace: as istiod serves a server only
        the inbound listeners of workloads its registry holds, a server of another namespace hears
        "does not exist" for its listener, and does not serve (or stops serving)."""
        if not self.warned_foreign:
            self.warned_foreign = True
            log.warning("node %r is a workload of namespace %r, not of %r: no inbound listener %r",
                        self.node.id, self.workload_identity.namespace, self._server.namespace, name)

    def next_response(self) -> discovery_pb2.DiscoveryResponse | None:
        """The next response to send, coalesced to the newest state; None if there is none."""
        if not self._server.ready:
            return None  # first requests wait for the first catalog rather than get empty endpoints
        for type_url in PUSH_ORDER:
            sub = self.subscriptions.get(type_url)
            if sub is None or sub.in_flight:
                continue
            if not sub.names and not sub.wildcard:
                sub.must_answer = False  # nothing subscribed (an unsubscribe of RDS/EDS needs no answer)
                continue
            resources = self._resolve(type_url, sub)
            versions = {name: r.version for name, r in resources.items()}
            if not sub.must_answer and versions == sub.sent:
                continue
            sub.must_answer, sub.in_flight, sub.sent = False, True, versions
            sub.sent_at = time.monotonic()
            sub.nonce = str(next(self._nonces))
            version = sub.sent_version = str(self._server.store.generation)
            log.debug("ads stream %d: %s version %s nonce %s: %s", self.id, short(type_url), version, sub.nonce,
                      sorted(resources))
            return discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=sub.nonce,
                                                   resources=[r.packed for r in resources.values()])
        return None

    def overdue(self, timeout: float) -> tuple[str, float] | None:
        """(type URL, age) of a response unanswered for `timeout` seconds while the client lacks
        newer state of that type; None if there is none (an idle client that never ACKs costs nothing)."""
        now = time.monotonic()
        for type_url, sub in self.subscriptions.items():
            if not sub.in_flight or now - sub.sent_at < timeout:
                continue
            versions = {name: r.version for name, r in self._resolve(type_url, sub).items()}
            if sub.must_answer or versions != sub.sent:
                return type_url, now - sub.sent_at
        return None

    def uses(self, key: Key) -> bool:
        type_url, name, _variant = key
        sub = self.subscriptions.get(type_url)
        return sub is not None and name in sub.names

    def status(self) -> NodeStatus:
        resources = []
        store = self._server.store
        for type_url, sub in sorted(self.subscriptions.items()):
            for name in sorted(sub.names):
                sent, acked = sub.sent.get(name), sub.acked.get(name)
                nacked = sub.last_nack is not None and name in sub.nacked_names
                state = "NACKED" if nacked else "ACKED" if acked is not None and acked == sent else "REQUESTED"
                resource = store.get(type_url, name, self.workload_identity.namespace, self.workload_identity,
                                     self.c_core) \
                    if sent is not None else None
                stale = self._server.stale_reason(resource.service) if resource and resource.service else ""
                resources.append(ResourceStatus(
                    type_url, name, "" if sent is None else str(sent), "" if acked is None else str(acked), state,
                    sub.in_flight and sent is not None, sub.last_nack if nacked else None, stale, resource))
        acked_versions = {t: s.acked_version for t, s in self.subscriptions.items() if s.acked_version}
        nacks = {t: s.last_nack for t, s in self.subscriptions.items() if s.last_nack}
        return NodeStatus(self.node, self.node.id, self.identity.service, self.peer, acked_versions, nacks,
                          tuple(resources))


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    """The ADS service over a `ResourceStore`. `ready` stays False until the first catalog has
    been published (requests wait until then); `notify()` after every change of the store."""

    def __init__(self, store: ResourceStore, namespace: str = "default",
                 stale_reasons: Mapping[ServiceKey, str] | None = None, unacked_timeout: float = UNACKED_TIMEOUT,
                 on_node: Callable[[NodeIdentity], object] | None = None) -> None:
        self.store = store
        self.on_node = on_node  # called once per stream with the node's identity, before it is answered
        self.unacked_timeout = unacked_timeout
        self.dropped = 0  # streams closed because their client stopped answering
        self.namespace = namespace
        self.ready = False
        self._stale_reasons = stale_reasons if stale_reasons is not None else {}
        self._streams: set[_Stream] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def stale_reason(self, service: ServiceKey) -> str:
        reason = self._stale_reasons.get(service)
        return f"translation of {service.fqdn} failed, its last good version is kept: {reason}" if reason else ""

    def status(self) -> list[NodeStatus]:
        """ACK/NACK state of every connected xDS client, ordered by node id."""
        return sorted((s.status() for s in self._streams), key=lambda n: (n.node_id, n.peer))

    def identities(self) -> list[NodeIdentity]:
        """The identity of every connected node (one per stream: a reconnecting node may show twice)."""
        return [stream.identity for stream in self._streams if stream.node.id]

    def in_use(self, key: Key) -> bool:
        return any(stream.uses(key) for stream in self._streams)

    def notify(self) -> None:
        """The store changed (or became ready): every stream looks for what is new for it."""
        self.ready = True
        for stream in self._streams:
            stream.wake.set()

    def close(self) -> None:
        """End every open stream (the clients reconnect to whichever control plane is up)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        for stream in self._streams:
            stream.closed = True
            stream.wake.set()

    async def StreamAggregatedResources(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        stream = _Stream(self, context.peer())

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
                stream.closed = True
                stream.wake.set()

        self._streams.add(stream)
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(), name="ads:sweep")
        reader = asyncio.create_task(read())
        started = time.monotonic()
        try:
            while not stream.closed:
                response = stream.next_response()
                if response is None:
                    if not await self._wait(stream):
                        await self._drop(stream, context)
                        return
                    continue
                yield response
        finally:
            reader.cancel()
            self._streams.discard(stream)
            log.info("ads stream %d from node %r closed after %.1f s", stream.id, stream.node_id,
                     time.monotonic() - started)


    async def _wait(self, stream: _Stream) -> bool:
        """Wait for something new for `stream`; False if the sweeper is dropping it."""
        await stream.wake.wait()
        stream.wake.clear()
        return not stream.dropping

    async def _drop(self, stream: _Stream, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.dropped += 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, "xDS responses unanswered for too long; reconnect")

    async def _sweep(self) -> None:
        """Every quarter of `unacked_timeout`, whatever each stream's handler is doing: a stream with
        an overdue response is told to close, and ends with UNAVAILABLE as soon as it wakes.
        (grpc.aio buffers a response the client does not read, so a handler never stays in a
        write: measured with a 300 kB response to a client that never reads.)"""
        while True:
            await asyncio.sleep(self.unacked_timeout / 4)
            for stream in list(self._streams):
                if stream.dropping:
                    continue
                try:
                    overdue = stream.overdue(self.unacked_timeout)
                except Exception:  # a bug: say so, and keep sweeping the others
                    log.exception("ads stream %d: checking for unanswered responses failed", stream.id)
                    continue
                if overdue is None:
                    continue
                type_url, age = overdue
                stream.dropping = f"{short(type_url)} unanswered for {age:.1f} s"
                log.warning("ads stream %d from node %r: its %s response is unanswered after %.1f s while newer "
                            "state waits; closing the stream (a client that reads again reconnects)", stream.id,
                            stream.node_id, short(type_url), age,
                            extra={"node_id": stream.node_id, "type_url": type_url})
                stream.wake.set()


def create_server(address: str, *servicers_adders: tuple[Callable[[Any, grpc.aio.Server], None], object],
                  ) -> tuple[grpc.aio.Server, int]:
    """An unstarted server on `address` (port 0 picks one) with each `(add_function, servicer)`;
    returns it and its port."""
    server = grpc.aio.server()
    for add, servicer in servicers_adders:
        add(servicer, server)
    port = server.add_insecure_port(address)
    return server, port
