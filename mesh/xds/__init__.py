"""The xDS control plane: Consul catalog -> xDS resources -> ADS for proxyless gRPC clients and servers.

Modules, one concern each: `catalog` (watch Consul), `translate` (pure Catalog + Policy ->
resources), `snapshot` (versioned, consistency-checked snapshots), `server` (the ADS protocol),
`__main__` (`python -m mesh.xds`).
"""

from mesh.xds.catalog import Catalog, ConsulWatcher, Endpoint
from mesh.xds.server import AdsServer, Nack, NodeStatus, create_server
from mesh.xds.snapshot import InconsistentSnapshot, Snapshot, SnapshotCache, check_consistency
from mesh.xds.translate import Policy, server_listener, translate

__all__ = ["AdsServer", "Catalog", "ConsulWatcher", "Endpoint", "InconsistentSnapshot", "Nack", "NodeStatus", "Policy",
           "Snapshot", "SnapshotCache", "check_consistency", "create_server", "server_listener", "translate"]
