"""Catalog + Policy -> xDS resources for proxyless gRPC clients and servers. Pure functions, no I/O.

Names follow docs/runtime-contract.md: listener and route config `NAME`, cluster `outbound|NAME`,
EDS name = cluster name; server listeners `grpc/server?xds.resource.listening_address=HOST:PORT`
are built on demand from the name asked for. Only shapes that grpcio, grpc-go and grpc-js all
accept (the prototype's FINDINGS.md): a load_balancing_weight on every locality, the router filter
last, ROUND_ROBIN, and (to come) outlier detection always with its success_rate fields.

Where the roadmap plugs in, each through `Policy` and one function below:
VirtualService -> `routes_for`, `client_http_filters` (fault before the router);
DestinationRule -> `clusters_for` (subsets `outbound|NAME|SUBSET` by endpoint Meta), `cluster`;
PeerAuthentication -> `server_transport_socket` (DownstreamTlsContext), `cluster` (Upstream);
AuthorizationPolicy -> `server_http_filters` (RBAC before the router), per workload.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from mesh.xds.catalog import Catalog, Endpoint

__all__ = ["CLUSTER", "ENDPOINT", "LISTENER", "ROUTE", "SERVER_LISTENER_PREFIX", "TYPE_URLS", "Policy", "Resources",
           "cluster_name", "pack", "server_listener", "translate"]

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
TYPE_URLS = (LISTENER, ROUTE, CLUSTER, ENDPOINT)
SERVER_LISTENER_PREFIX = "grpc/server?xds.resource.listening_address="
HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"
LOCALITY = base_pb2.Locality(region="local", zone="local")

# type URL -> resource name -> resource
Resources = Mapping[str, Mapping[str, Message]]


@dataclasses.dataclass(frozen=True)
class Policy:
    """What the Istio resources in `istio/` say. The default (no resources) means: one route to
    all passing endpoints of a service, round robin, plaintext, every RPC allowed.

    Fields arrive with the roadmap (virtual_services, destination_rules, peer_authentications,
    authorization_policies); keep it frozen and comparable: snapshots compare policies.
    """


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


CLUSTER_PREFIX = "outbound|"


def cluster_name(service: str) -> str:
    return f"{CLUSTER_PREFIX}{service}"


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def _address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


def _router() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router()))


# ---- client side ---------------------------------------------------------------------------


def client_http_filters(service: str, policy: Policy) -> list[hcm_pb2.HttpFilter]:
    return [_router()]  # the router must be last; HCM without filters is NACKed


def client_listener(service: str, policy: Policy) -> listener_pb2.Listener:
    rds = hcm_pb2.Rds(config_source=_ads(), route_config_name=service)
    hcm = hcm_pb2.HttpConnectionManager(rds=rds, http_filters=client_http_filters(service, policy))
    return listener_pb2.Listener(name=service, api_listener=api_listener_pb2.ApiListener(api_listener=pack(hcm)))


def routes_for(service: str, policy: Policy) -> list[route_components_pb2.Route]:
    action = route_components_pb2.RouteAction(cluster=cluster_name(service))
    return [route_components_pb2.Route(name="default", match=route_components_pb2.RouteMatch(prefix=""), route=action)]


def route_configuration(service: str, policy: Policy) -> route_pb2.RouteConfiguration:
    host = route_components_pb2.VirtualHost(name=service, domains=[service], routes=routes_for(service, policy))
    return route_pb2.RouteConfiguration(name=service, virtual_hosts=[host])


def clusters_for(service: str, endpoints: tuple[Endpoint, ...], policy: Policy) -> dict[str, tuple[Endpoint, ...]]:
    """Cluster name -> the endpoints it balances over (subsets will filter by Meta)."""
    return {cluster_name(service): endpoints}


def cluster(name: str, policy: Policy) -> cluster_pb2.Cluster:
    eds = cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads(), service_name=name)
    return cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS, eds_cluster_config=eds,
                               lb_policy=cluster_pb2.Cluster.ROUND_ROBIN)


def load_assignment(name: str, endpoints: tuple[Endpoint, ...]) -> endpoint_pb2.ClusterLoadAssignment:
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    if endpoints:
        locality = assignment.endpoints.add(locality=LOCALITY)
        locality.load_balancing_weight.value = 1  # without it every RPC fails in grpcio
        for endpoint in endpoints:
            address = _address(endpoint.address, endpoint.port)
            locality.lb_endpoints.add(endpoint=endpoint_components_pb2.Endpoint(address=address),
                                      health_status=health_check_pb2.HEALTHY)
    return assignment


def translate(catalog: Catalog, policy: Policy = Policy()) -> dict[str, dict[str, Message]]:
    """Every client-side resource for every service in the catalog, also for services with no
    passing instance (their ClusterLoadAssignment is empty, so clients fail fast with UNAVAILABLE)."""
    resources: dict[str, dict[str, Message]] = {type_url: {} for type_url in TYPE_URLS}
    for service, endpoints in catalog.services.items():
        resources[LISTENER][service] = client_listener(service, policy)
        resources[ROUTE][service] = route_configuration(service, policy)
        for name, members in clusters_for(service, endpoints, policy).items():
            resources[CLUSTER][name] = cluster(name, policy)
            resources[ENDPOINT][name] = load_assignment(name, members)
    return resources


def on_demand(type_url: str, name: str, workload: str, policy: Policy) -> Message | None:
    """A resource for a subscribed name that is not in the snapshot: a server listener for the
    asking workload, or the client resources of a service with no endpoints."""
    if type_url == LISTENER:
        return server_listener(name, workload, policy) or client_listener(name, policy)
    if type_url == ROUTE:
        return route_configuration(name, policy)
    if name.startswith(CLUSTER_PREFIX):
        return cluster(name, policy) if type_url == CLUSTER else load_assignment(name, ())
    return None


# ---- server side (xDS-managed gRPC servers) ---------------------------------------------------


def server_http_filters(workload: str, policy: Policy) -> list[hcm_pb2.HttpFilter]:
    return [_router()]  # RBAC from AuthorizationPolicy goes before the router


def server_transport_socket(workload: str, policy: Policy) -> base_pb2.TransportSocket | None:
    return None  # DownstreamTlsContext from PeerAuthentication; None = plaintext


def server_listener(resource_name: str, workload: str, policy: Policy) -> listener_pb2.Listener | None:
    """The listener an xDS-managed server on HOST:PORT asks for; `workload` is the service the
    server's node belongs to (bootstrap node.cluster). None if the name is not a server listener."""
    if not resource_name.startswith(SERVER_LISTENER_PREFIX):
        return None
    host, _, port = resource_name[len(SERVER_LISTENER_PREFIX) :].rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    serve = route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix=""),
                                       non_forwarding_action=route_components_pb2.NonForwardingAction())
    host_routes = route_components_pb2.VirtualHost(name="inbound", domains=["*"], routes=[serve])
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix="inbound", route_config=route_pb2.RouteConfiguration(name="inbound", virtual_hosts=[host_routes]),
        http_filters=server_http_filters(workload, policy))
    chain = listener_components_pb2.FilterChain(
        name="inbound", filters=[listener_components_pb2.Filter(name=HCM_FILTER, typed_config=pack(hcm))])
    transport_socket = server_transport_socket(workload, policy)
    if transport_socket is not None:
        chain.transport_socket.CopyFrom(transport_socket)
    return listener_pb2.Listener(name=resource_name, address=_address(host, int(port)), filter_chains=[chain])
