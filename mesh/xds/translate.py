"""Catalog + Policy -> xDS resources for proxyless gRPC clients and servers. Pure functions, no I/O.

Two steps, so that a change costs only what it touches (issue 6) and a bad input spoils only its
own service:
1. `translate_service` turns one service's Consul endpoints (and, later, its policy) into a
   validated `ServiceModel`, or raises `TranslationError` naming what is wrong;
2. the builders below turn a model (or nothing, for a service the catalog does not know) into
   the resource a client or server asked for by name (names: `mesh.xds.names`).

Only shapes that grpcio, grpc-go and grpc-js all accept (the prototype's FINDINGS.md): a
load_balancing_weight on every locality, the router filter last, ROUND_ROBIN, and (to come)
outlier detection always with its success_rate fields.

Where the roadmap plugs in, each through `Policy` and one function below:
VirtualService -> `routes_for`, `client_http_filters` (fault before the router);
DestinationRule -> `cluster` (subsets `outbound|PORT|SUBSET|FQDN` by endpoint Meta);
PeerAuthentication -> `server_transport_socket` (DownstreamTlsContext), `cluster` (Upstream);
AuthorizationPolicy -> `server_http_filters` (RBAC before the router), per workload labels.
"""

from __future__ import annotations

import dataclasses
import ipaddress
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

from mesh.xds.catalog import Endpoint
from mesh.xds.names import ClientTarget, ServiceKey, cluster_name

__all__ = ["CLUSTER", "ENDPOINT", "LISTENER", "ROUTE", "TYPE_URLS", "Policy", "ServiceModel", "TranslationError",
           "WorkloadIdentity", "client_listener", "cluster", "load_assignment", "pack", "route_configuration",
           "server_listener", "translate_service"]

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
TYPE_URLS = (LISTENER, ROUTE, CLUSTER, ENDPOINT)
HCM_FILTER = "envoy.filters.network.http_connection_manager"
ROUTER_FILTER = "envoy.filters.http.router"
LOCALITY = base_pb2.Locality(region="local", zone="local")


@dataclasses.dataclass(frozen=True)
class Policy:
    """What the Istio resources in `istio/` say. The default (no resources) means: one route to
    all passing endpoints of a service, round robin, plaintext, every RPC allowed.

    Fields arrive with the roadmap (virtual_services, destination_rules, peer_authentications,
    authorization_policies); keep it frozen and comparable: the reconciler compares policies.
    """


@dataclasses.dataclass(frozen=True)
class WorkloadIdentity:
    """What a server listener depends on: the node's namespace and labels (istiod selects
    PeerAuthentication and AuthorizationPolicy by them). Nodes with equal identities share
    their server listeners."""

    namespace: str
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, namespace: str, labels: Mapping[str, str]) -> WorkloadIdentity:
        return cls(namespace, tuple(sorted(labels.items())))


class TranslationError(ValueError):
    """A service's inputs cannot become resources; the message says which input and why."""


@dataclasses.dataclass(frozen=True)
class LbEndpoint:
    instance_id: str
    ip: str
    port: int
    meta: Mapping[str, str]


@dataclasses.dataclass(frozen=True)
class ServiceModel:
    """One service, validated: what every resource of that service is built from."""

    service: ServiceKey
    endpoints: tuple[LbEndpoint, ...]


def translate_service(service: ServiceKey, endpoints: tuple[Endpoint, ...], policy: Policy) -> ServiceModel:
    """Raises TranslationError for an endpoint gRPC could not use: EDS addresses must be IP
    literals (gRPC resolves no host names there), ports in 1..65535."""
    checked = []
    for endpoint in endpoints:
        try:
            ip = str(ipaddress.ip_address(endpoint.address))
        except ValueError:
            raise TranslationError(f"instance {endpoint.instance_id!r}: address {endpoint.address!r} "
                                   "is not an IP address (EDS needs IP literals)") from None
        if not 0 < endpoint.port < 65536:
            raise TranslationError(f"instance {endpoint.instance_id!r}: port {endpoint.port} out of range")
        checked.append(LbEndpoint(endpoint.instance_id, ip, endpoint.port, endpoint.meta))
    return ServiceModel(service, tuple(checked))


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def _address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


def _router() -> hcm_pb2.HttpFilter:
    return hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router()))


# ---- client side ---------------------------------------------------------------------------


def client_http_filters(target: ClientTarget, policy: Policy) -> list[hcm_pb2.HttpFilter]:
    return [_router()]  # the router must be last; HCM without filters is NACKed


def client_listener(name: str, target: ClientTarget, policy: Policy) -> listener_pb2.Listener:
    """Named exactly as asked (grpc may watch `catalog:P` and `catalog.default:P` at once);
    every form shares one route configuration, named like the cluster, as istiod does."""
    rds = hcm_pb2.Rds(config_source=_ads(), route_config_name=cluster_name(target))
    hcm = hcm_pb2.HttpConnectionManager(rds=rds, http_filters=client_http_filters(target, policy))
    return listener_pb2.Listener(name=name, api_listener=api_listener_pb2.ApiListener(api_listener=pack(hcm)))


def routes_for(target: ClientTarget, policy: Policy) -> list[route_components_pb2.Route]:
    action = route_components_pb2.RouteAction(cluster=cluster_name(target))
    return [route_components_pb2.Route(name="default", match=route_components_pb2.RouteMatch(prefix=""), route=action)]


def route_configuration(target: ClientTarget, policy: Policy) -> route_pb2.RouteConfiguration:
    """One virtual host whose domains are every form the service can be dialled by, with and
    without the port (gRPC matches the dialled authority against them)."""
    hosts = target.service.hosts()
    domains = [form for host in hosts for form in (host, f"{host}:{target.port}")]
    host = route_components_pb2.VirtualHost(name=f"{target.service.fqdn}:{target.port}", domains=domains,
                                            routes=routes_for(target, policy))
    return route_pb2.RouteConfiguration(name=cluster_name(target), virtual_hosts=[host])


def cluster(name: str, policy: Policy) -> cluster_pb2.Cluster:
    eds = cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads(), service_name=name)
    return cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS, eds_cluster_config=eds,
                               lb_policy=cluster_pb2.Cluster.ROUND_ROBIN)


def load_assignment(name: str, model: ServiceModel | None) -> endpoint_pb2.ClusterLoadAssignment:
    """Every passing instance of the service, whatever port the client dialled: the port in the
    name is the service's port, each instance listens on its own (as WorkloadEntry ports do).
    No model (a service the catalog does not know) is an empty assignment, never "does not
    exist": calls fail fast with UNAVAILABLE and recover with one EDS update."""
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    if model is not None and model.endpoints:
        locality = assignment.endpoints.add(locality=LOCALITY)
        locality.load_balancing_weight.value = 1  # without it every RPC fails in grpcio
        for endpoint in model.endpoints:
            address = _address(endpoint.ip, endpoint.port)
            locality.lb_endpoints.add(endpoint=endpoint_components_pb2.Endpoint(address=address),
                                      health_status=health_check_pb2.HEALTHY)
    return assignment


# ---- server side (xDS-managed gRPC servers) ---------------------------------------------------


def server_http_filters(identity: WorkloadIdentity, policy: Policy) -> list[hcm_pb2.HttpFilter]:
    return [_router()]  # RBAC from AuthorizationPolicy goes before the router (DENY, then ALLOW)


def server_transport_socket(identity: WorkloadIdentity, policy: Policy) -> base_pb2.TransportSocket | None:
    return None  # DownstreamTlsContext from PeerAuthentication; None = plaintext


def server_listener(name: str, host: str, port: int, identity: WorkloadIdentity,
                    policy: Policy) -> listener_pb2.Listener:
    """The inbound listener of an xDS-managed server on HOST:PORT (`Listener.address` must equal
    the name's address, or gRPC rejects it). istiod answers only for a port of a service
    instance on the node's IP; this control plane answers any (a runtime asks for its own)."""
    serve = route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix="/"),
                                       non_forwarding_action=route_components_pb2.NonForwardingAction())
    host_routes = route_components_pb2.VirtualHost(name="inbound", domains=["*"], routes=[serve])
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix="inbound", route_config=route_pb2.RouteConfiguration(name="inbound", virtual_hosts=[host_routes]),
        http_filters=server_http_filters(identity, policy))
    transport_socket = server_transport_socket(identity, policy)
    suffix = "plaintext" if transport_socket is None else "mtls"
    chain = listener_components_pb2.FilterChain(
        name=f"inbound-{suffix}", filters=[listener_components_pb2.Filter(name=HCM_FILTER, typed_config=pack(hcm))])
    if transport_socket is not None:
        chain.transport_socket.CopyFrom(transport_socket)
    return listener_pb2.Listener(name=name, address=_address(host, port), filter_chains=[chain])
