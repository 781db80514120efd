"""What an instance's own xDS client holds, from the CSDS its admin port serves (every language):
so a test waits until the client under test has taken a policy (ACKED) before it measures.

    wait_route_names(admin, "outbound|50061||pricing.default.svc.cluster.local", {"split-1a2b"})
    wait_cluster(admin, cluster_name("catalog", 50051, "slow"), lambda c: c.HasField("circuit_breakers"))
    wait_endpoint(admin, cluster_name("catalog", 50051, "v1"), port)
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from support.poll import poll_until

__all__ = ["cluster_name", "clusters", "endpoints", "route_names", "wait_cluster", "wait_endpoint", "wait_route_names"]

ACKED = config_dump_shared_pb2.ClientResourceStatus.ACKED
NAMESPACE = "default"


def cluster_name(service: str, port: int, subset: str = "") -> str:
    """The cluster (and route configuration, and load assignment) name istiod gives `service`."""
    return f"outbound|{port}|{subset}|{service}.{NAMESPACE}.svc.cluster.local"


def _resources(admin: str, message_type: type) -> dict[str, object]:
    """name -> unpacked resource of that type, of the ACKED resources the instance's xDS client holds."""
    with grpc.insecure_channel(admin) as channel:
        reply = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel).FetchClientStatus(
            csds_pb2.ClientStatusRequest(), timeout=2)
    out = {}
    for config in reply.config:
        for resource in config.generic_xds_configs:
            if resource.client_status != ACKED or not resource.xds_config.Is(message_type.DESCRIPTOR):
                continue
            message = message_type()
            resource.xds_config.Unpack(message)
            out[resource.name] = message
    return out


def route_names(admin: str, route_config: str) -> set[str]:
    """The names of the routes of the route configuration `route_config`, as the client ACKED it."""
    config = _resources(admin, route_pb2.RouteConfiguration).get(route_config)
    if config is None:
        return set()
    return {route.name for host in config.virtual_hosts for route in host.routes}


def clusters(admin: str) -> dict[str, cluster_pb2.Cluster]:
    return _resources(admin, cluster_pb2.Cluster)


def endpoints(admin: str, cluster: str) -> set[tuple[str, int]]:
    assignment = _resources(admin, endpoint_pb2.ClusterLoadAssignment).get(cluster)
    if assignment is None:
        return set()
    return {(e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
            for locality in assignment.endpoints for e in locality.lb_endpoints}


def wait_route_names(admin: str, route_config: str, names: set[str], timeout: float = 10.0,
                     why: Callable[[], str] = lambda: "") -> None:
    """Until the client ACKED a route configuration with all of `names` (route names are the
    VirtualService's `http[].name`, unique per edit, so this is the edit in force)."""
    try:
        poll_until(lambda: names <= route_names(admin, route_config), timeout, 0.05)
    except AssertionError:
        raise AssertionError(f"the client at {admin} did not take routes {sorted(names)} of {route_config} in "
                             f"{timeout} s; it holds {sorted(route_names(admin, route_config))}. {why()}") from None


def wait_cluster(admin: str, cluster: str, condition: Callable[[cluster_pb2.Cluster], bool], timeout: float = 10.0,
                 what: str = "") -> cluster_pb2.Cluster:
    def ready():
        found = clusters(admin).get(cluster)
        return found if found is not None and condition(found) else None
    return poll_until(ready, timeout, 0.05, f"{cluster} {what} at the client {admin}")


def wait_endpoint(admin: str, cluster: str, port: int, timeout: float = 15.0) -> None:
    poll_until(lambda: any(p == port for _, p in endpoints(admin, cluster)), timeout, 0.05,
               f"port {port} in the load assignment {cluster} at the client {admin}")
