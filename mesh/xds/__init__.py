"""The xDS control plane: Consul catalog -> xDS resources -> ADS for proxyless gRPC clients and servers.

Modules, one concern each: `bootstrap` (the bootstrap file every instance reads, and how a node
is read back), `names` (istiod's resource names), `catalog` (watch Consul), `translate` (pure:
one service's inputs -> its resources), `resources` (the shared, versioned, consistency-checked
resource store), `reconcile` (latest catalog + policy -> store, per service), `server` (the ADS
protocol, one view per node), `csds` (client status), `supervise` (restart failed tasks, health),
`ca` (the mesh CA: each connecting instance's SPIFFE certificate files, rotated at half their
lifetime), `__main__` (`python -m mesh.xds`).
"""

from mesh.xds.catalog import Catalog, ConsulWatcher, Endpoint
from mesh.xds.csds import CsdsServer
from mesh.xds.reconcile import Reconciler
from mesh.xds.resources import Resource, ResourceStore
from mesh.xds.server import AdsServer, Nack, NodeStatus, create_server
from mesh.xds.translate import Policy, TranslationError, translate_service

__all__ = ["AdsServer", "Catalog", "ConsulWatcher", "CsdsServer", "Endpoint", "Nack", "NodeStatus", "Policy",
           "Reconciler", "Resource", "ResourceStore", "TranslationError", "create_server", "translate_service"]
