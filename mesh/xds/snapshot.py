"""Immutable, versioned snapshots of the xDS resources, checked for consistency before publishing.

A snapshot's version goes up only when its content changes; each type also remembers the
version at which its own content last changed, so a change of endpoints re-sends EDS only.
"""

from __future__ import annotations

import dataclasses
import logging
import types
from collections.abc import Callable, Collection, Mapping

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf.message import Message

from mesh.xds.translate import CLUSTER, ENDPOINT, LISTENER, ROUTE, TYPE_URLS, Policy, Resources, on_demand

__all__ = ["InconsistentSnapshot", "Snapshot", "SnapshotCache", "check_consistency"]

log = logging.getLogger(__name__)


class InconsistentSnapshot(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclasses.dataclass(frozen=True)
class Snapshot:
    version: int
    type_versions: Mapping[str, int]
    resources: Resources
    policy: Policy

    def version_of(self, type_url: str) -> str:
        return str(self.type_versions.get(type_url, self.version))

    def resolve(self, type_url: str, names: Collection[str] | None, workload: str) -> dict[str, Message]:
        """The resources to send for a subscription; names=None is a wildcard (everything known).

        Server listeners are built on demand for the asking workload. A client name the catalog
        does not know (yet, or any more) gets the resources of a service with no endpoints, never
        "does not exist": a `consul agent -dev` that restarts comes back empty for a moment, and
        a deleted listener can leave a grpc-js channel failing "Listener ... does not exist" long
        after the service is back. An empty endpoint list fails calls just as fast and recovers
        with one EDS update."""
        known = self.resources.get(type_url, {})
        if names is None:
            return dict(known)
        found = {}
        for name in names:
            resource = known.get(name) or on_demand(type_url, name, workload, self.policy)
            if resource is not None:
                found[name] = resource
        return found


def _fingerprint(resources: Mapping[str, Message]) -> dict[str, bytes]:
    return {name: r.SerializeToString(deterministic=True) for name, r in resources.items()}


def check_consistency(resources: Resources) -> list[str]:
    """Every RDS name a listener uses, every cluster a route uses and every EDS name a cluster
    uses must exist; a client would otherwise wait for a resource that never comes."""
    problems = []
    for name, listener in resources.get(LISTENER, {}).items():
        hcm = hcm_pb2.HttpConnectionManager()
        if listener.api_listener.api_listener.Unpack(hcm) and hcm.HasField("rds"):
            if hcm.rds.route_config_name not in resources.get(ROUTE, {}):
                problems.append(f"listener {name!r}: no route configuration {hcm.rds.route_config_name!r}")
    for name, config in resources.get(ROUTE, {}).items():
        for host in config.virtual_hosts:
            for route in host.routes:
                wanted = [route.route.cluster] if route.route.cluster else []
                wanted += [weighted.name for weighted in route.route.weighted_clusters.clusters]
                for cluster in wanted:
                    if cluster not in resources.get(CLUSTER, {}):
                        problems.append(f"route configuration {name!r}: no cluster {cluster!r}")
    for name, cluster in resources.get(CLUSTER, {}).items():
        eds_name = cluster.eds_cluster_config.service_name or name
        if eds_name not in resources.get(ENDPOINT, {}):
            problems.append(f"cluster {name!r}: no load assignment {eds_name!r}")
    return problems


def next_snapshot(previous: Snapshot | None, resources: Resources, policy: Policy) -> Snapshot:
    """A new snapshot if the content differs from `previous`, else `previous` itself.
    Raises InconsistentSnapshot when a reference points at nothing."""
    problems = check_consistency(resources)
    if problems:
        raise InconsistentSnapshot(problems)
    frozen = types.MappingProxyType({t: types.MappingProxyType(dict(resources.get(t, {}))) for t in TYPE_URLS})
    if previous is None:
        return Snapshot(1, types.MappingProxyType({t: 1 for t in TYPE_URLS}), frozen, policy)
    # server listeners are built from the policy, so a policy change is a listener change
    changed = {t for t in TYPE_URLS if _fingerprint(frozen[t]) != _fingerprint(previous.resources[t])
               or (t == LISTENER and policy != previous.policy)}
    if not changed:
        return previous
    version = previous.version + 1
    type_versions = {t: version if t in changed else previous.type_versions[t] for t in TYPE_URLS}
    return Snapshot(version, types.MappingProxyType(type_versions), frozen, policy)


class SnapshotCache:
    """Holds the snapshot being served and tells subscribers (the ADS streams) about a new one."""

    def __init__(self) -> None:
        self.current: Snapshot | None = None
        self._subscribers: list[Callable[[Snapshot], None]] = []

    def subscribe(self, callback: Callable[[Snapshot], None]) -> None:
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Callable[[Snapshot], None]) -> None:
        self._subscribers.remove(callback)

    def update(self, resources: Resources, policy: Policy) -> bool:
        """Publish the resources if they are consistent and new; True if a snapshot was published.
        An inconsistent set is logged and the previous snapshot keeps serving."""
        try:
            snapshot = next_snapshot(self.current, resources, policy)
        except InconsistentSnapshot as error:
            serving = self.current.version if self.current else "none"
            log.error("rejected inconsistent xDS snapshot, still serving version %s: %s", serving, error)
            return False
        if snapshot is self.current:
            return False
        self.current = snapshot
        counts = {t.rsplit(".", 1)[-1]: len(snapshot.resources[t]) for t in TYPE_URLS}
        log.info("publishing xDS snapshot version %d %s", snapshot.version, counts)
        for callback in list(self._subscribers):
            callback(snapshot)
        return True
