"""The resource store: every xDS resource any node has asked for, built once, serialized once,
versioned, and shared by every node that uses it.

A resource is materialized the first time a node subscribes to its name (names carry the port,
so the set of names cannot be listed in advance) and rebuilt whenever what it depends on changes:
its service's `ServiceModel`, or the policy; a server listener also depends on the asking node's
`WorkloadIdentity`, so nodes with equal identities share one. Each resource keeps the store
generation at which its content last changed: its version, which is what CSDS shows and what a
stream compares to decide whether it has anything new to send.

Consistency (as go-control-plane checks a snapshot): building a resource also resolves every name
it refers to (a listener's route configuration, a route's clusters, a cluster's EDS name). A
reference that resolves to nothing is a bug in translation; the resource is then not changed
(its last good version keeps serving) and the problem is logged and counted in `problems`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from mesh.xds import translate
from mesh.xds.names import ServiceKey, parse_client_listener, parse_cluster_name, parse_server_listener
from mesh.xds.translate import CLUSTER, ENDPOINT, LISTENER, ROUTE, Policy, ServiceModel, WorkloadIdentity

__all__ = ["C_CORE", "InconsistentResource", "Resource", "ResourceStore"]

log = logging.getLogger(__name__)

# (type URL, name, variant): variant is what else the content depends on besides the name (the
# node's namespace for a client listener, its WorkloadIdentity for a server listener, C_CORE for
# the route configurations of C-core clients), else None
Key = tuple[str, str, object]
C_CORE = "c-core"  # grpcio & co: route timeouts not in max_stream_duration (mesh.xds.traffic)


class InconsistentResource(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Resource:
    type_url: str
    name: str
    version: int  # store generation at which the content last changed
    message: Message
    packed: any_pb2.Any  # serialized once, copied into every response that carries it
    service: ServiceKey | None  # the service it is built from; None: policy (and identity) only
    references: tuple[tuple[str, str], ...]  # (type URL, name) a client asks for next


def references_of(type_url: str, message: Any) -> tuple[tuple[str, str], ...]:
    """`message`: the envoy Listener, RouteConfiguration or Cluster of `type_url` (xds-protos has no types)."""
    if type_url == LISTENER and message.HasField("api_listener"):
        hcm = hcm_pb2.HttpConnectionManager()
        message.api_listener.api_listener.Unpack(hcm)
        return ((ROUTE, hcm.rds.route_config_name),) if hcm.HasField("rds") else ()
    if type_url == ROUTE:
        clusters = []
        for host in message.virtual_hosts:
            for route in host.routes:
                clusters += [route.route.cluster] if route.route.cluster else []
                clusters += [weighted.name for weighted in route.route.weighted_clusters.clusters]
        return tuple((CLUSTER, name) for name in dict.fromkeys(clusters))
    if type_url == CLUSTER:
        return ((ENDPOINT, message.eds_cluster_config.service_name or message.name),)
    return ()


class ResourceStore:
    def __init__(self) -> None:
        self.generation = 0
        self.policy = Policy()
        self.problems: dict[Key, str] = {}  # resources whose rebuild failed, and why
        self._models: dict[ServiceKey, ServiceModel] = {}
        self._entries: dict[Key, Resource] = {}
        self._by_service: dict[ServiceKey | None, set[Key]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, type_url: str, name: str, namespace: str, identity: WorkloadIdentity,
            c_core: bool = False) -> Resource | None:
        """The resource a node of `namespace` / `identity` (a C-core client: `c_core`) gets for
        `name`; None if the name means nothing (the client then hears "does not exist" for it)."""
        key = self._key(type_url, name, namespace, identity, c_core)
        if key is None:
            return None
        entry = self._entries.get(key)
        if entry is None:
            try:
                entry = self._build(key, previous=None)
            except InconsistentResource as error:
                log.error("cannot build %s %r: %s", type_url.rsplit(".", 1)[-1], name, error)
                self.problems[key] = str(error)
                return None
        return entry

    def apply(self, models: Mapping[ServiceKey, ServiceModel | None], policy: Policy) -> set[ServiceKey | None]:
        """Take new models (None: the service is gone) and the policy; rebuild the resources that
        depend on them. Returns what changed (services; None for "server listeners"), empty if
        no resource's content changed. Every call is a new generation: versions are ordered, not dense."""
        for service, model in models.items():
            if model is None:
                self._models.pop(service, None)
            else:
                self._models[service] = model
        affected: Iterable[ServiceKey | None] = models.keys()
        if policy != self.policy:
            self.policy = policy
            affected = list(self._by_service)  # every resource may depend on the policy
        self.generation += 1
        changed: set[ServiceKey | None] = set()
        for affected_service in list(affected):
            for key in list(self._by_service.get(affected_service, ())):
                previous = self._entries[key]
                try:
                    if self._build(key, previous) is not previous:
                        changed.add(affected_service)
                except InconsistentResource as error:
                    log.error("rebuilding %s %r failed, its version %d keeps serving: %s",
                              key[0].rsplit(".", 1)[-1], key[1], previous.version, error)
                    self.problems[key] = str(error)
        return changed

    def _key(self, type_url: str, name: str, namespace: str, identity: WorkloadIdentity | None,
             c_core: bool = False) -> Key | None:
        if type_url == LISTENER:
            if parse_server_listener(name):
                return (type_url, name, identity)
            return (type_url, name, namespace) if parse_client_listener(name, namespace) else None
        if type_url == ROUTE:
            return (type_url, name, C_CORE if c_core else None) if parse_cluster_name(name) else None
        if type_url in (CLUSTER, ENDPOINT):
            return (type_url, name, None) if parse_cluster_name(name) else None
        return None

    def _message(self, key: Key) -> tuple[Message, ServiceKey | None]:
        type_url, name, variant = key  # a key _key made: its name parses
        if type_url == LISTENER and isinstance(variant, WorkloadIdentity):
            server = parse_server_listener(name)
            assert server is not None
            return translate.server_listener(name, *server, variant, self.policy), None
        if type_url == LISTENER:
            assert isinstance(variant, str)  # the asking node's namespace
            client = parse_client_listener(name, variant)
            assert client is not None
            return translate.client_listener(name, client, self.policy), client.service
        cluster = parse_cluster_name(name)
        assert cluster is not None
        target, _subset = cluster
        if type_url == ROUTE:
            return translate.route_configuration(target, self.policy, exact_timeouts=variant != C_CORE), target.service
        if type_url == CLUSTER:
            return translate.cluster(name, self.policy), target.service
        return translate.load_assignment(name, self._models.get(target.service), self.policy), target.service

    def _build(self, key: Key, previous: Resource | None) -> Resource:
        """The resource for `key` now: `previous` itself if its content is unchanged. Its
        references are resolved (and so built) too, and must exist."""
        message, service = self._message(key)
        references = references_of(key[0], message)
        namespace = service.namespace if service else ""
        for type_url, name in references:
            if self._key(type_url, name, namespace, None) is None:
                raise InconsistentResource(f"refers to {type_url.rsplit('.', 1)[-1]} {name!r}, which cannot exist")
        packed = translate.pack(message)
        if previous is not None and previous.packed.value == packed.value:
            return previous
        entry = Resource(key[0], key[1], self.generation, message, packed, service, references)
        self._entries[key] = entry
        self._by_service.setdefault(service, set()).add(key)
        self.problems.pop(key, None)
        for type_url, name in references:  # what the client asks for next, ready before it asks
            ref_key = self._key(type_url, name, namespace, None)
            assert ref_key is not None  # checked above
            if ref_key not in self._entries:
                self._build(ref_key, None)
        return entry

    def forget(self, in_use: Callable[[Key], bool]) -> int:
        """Drop resources no node subscribes to any more (and that nothing in use refers to);
        returns how many. Their names get a fresh version if asked for again."""
        keep = {key for key in self._entries if in_use(key)}
        todo = list(keep)
        while todo:  # and everything they refer to, transitively (listener -> route -> cluster -> EDS)
            entry = self._entries[todo.pop()]
            namespace = entry.service.namespace if entry.service else ""
            for type_url, name in entry.references:
                ref = self._key(type_url, name, namespace, None)
                if ref in self._entries and ref not in keep:
                    keep.add(ref)
                    todo.append(ref)
        dropped = [key for key in self._entries if key not in keep]
        for key in dropped:
            entry = self._entries.pop(key)
            self._by_service.get(entry.service, set()).discard(key)
        return len(dropped)
