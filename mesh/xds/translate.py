"""Catalog + Policy -> xDS resources for proxyless gRPC clients and servers. Pure functions, no I/O.

Two steps, so that a change costs only what it touches (issue 6) and a bad input spoils only its
own service:
1. `translate_service` turns one service's Consul endpoints into a validated `ServiceModel`, or
   raises `TranslationError` naming what is wrong;
2. the builders below turn a model (or nothing, for a service the catalog does not know) into
   the resource a client or server asked for by name (names: `mesh.xds.names`).

Only shapes that grpcio, grpc-go and grpc-js all accept (the prototype's FINDINGS.md): a
load_balancing_weight on every locality, the router filter last, ROUND_ROBIN or RING_HASH (never
LEAST_REQUEST: grpcio NACKs it), header matchers in the exact/prefix/safe_regex fields, and
outlier detection always with `enforcing_success_rate` (grpc-js-xds crashes without it).

The Istio resources arrive as `Policy` (`mesh.xds.istio`, already checked):
VirtualService -> `routes_for` (matches, weighted subsets, retries, timeouts, faults: the fault
filter before the router); DestinationRule -> `cluster` (RING_HASH, outlier detection, circuit
breakers), `load_assignment` (subsets
`outbound|PORT|SUBSET|FQDN`: the endpoints whose Consul Meta has the subset's labels);
AuthorizationPolicy -> `server_http_filters`: RBAC (`mesh.xds.security.rbac_filters`, per workload
labels) before the router; PeerAuthentication -> `server_transport_socket` (a DownstreamTlsContext
requiring a client certificate when the port is STRICT: `mesh.xds.security.server_mtls`); a
DestinationRule's `tls.mode: ISTIO_MUTUAL` -> the cluster's UpstreamTlsContext, verifying the
server's SPIFFE identity (`mesh.xds.security.upstream_tls`). Without ISTIO_MUTUAL a client dials
plaintext, as istiod's proxyless generator has it.
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
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message
from istio.networking.v1alpha3 import destination_rule_pb2, virtual_service_pb2

from mesh.xds import security, traffic
from mesh.xds.catalog import Endpoint
from mesh.xds.istio import Policy, host_service
from mesh.xds.names import ClientTarget, ServiceKey, cluster_name, parse_cluster_name

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
RING_SIZE = 1024  # istiod's minimum ring size when a consistentHash sets none


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
    """The fault filter (empty: routes carry their faults) and the router, which must be last."""
    name = traffic.fault_filter_name(policy.of(target.service).virtual_service)
    return [hcm_pb2.HttpFilter(name=name, typed_config=pack(fault_pb2.HTTPFault())), _router()]


def client_listener(name: str, target: ClientTarget, policy: Policy) -> listener_pb2.Listener:
    """Named exactly as asked (grpc may watch `catalog:P` and `catalog.default:P` at once);
    every form shares one route configuration, named like the cluster, as istiod does."""
    rds = hcm_pb2.Rds(config_source=_ads(), route_config_name=cluster_name(target))
    hcm = hcm_pb2.HttpConnectionManager(rds=rds, http_filters=client_http_filters(target, policy))
    return listener_pb2.Listener(name=name, api_listener=api_listener_pb2.ApiListener(api_listener=pack(hcm)))


def _destination_target(target: ClientTarget, destination: virtual_service_pb2.Destination,
                        policy_namespace: str) -> ClientTarget:
    service = host_service(destination.host, policy_namespace)
    return ClientTarget(service, destination.port.number or target.port)


def _hash_policies(destination: ClientTarget, subset: str,
                   policy: Policy) -> list[route_components_pb2.RouteAction.HashPolicy]:
    """A header hash policy when the destination's (merged) load balancer is consistentHash, as
    istiod puts it on the route."""
    lb = traffic_policy(policy.of(destination.service).destination_rule, subset).load_balancer
    if lb.HasField("consistent_hash") and lb.consistent_hash.http_header_name:
        header = route_components_pb2.RouteAction.HashPolicy.Header(header_name=lb.consistent_hash.http_header_name)
        return [route_components_pb2.RouteAction.HashPolicy(header=header)]
    return []


def _action(target: ClientTarget, http: virtual_service_pb2.HTTPRoute, policy: Policy) -> route_components_pb2.RouteAction:
    destinations = [(_destination_target(target, r.destination, target.service.namespace), r.destination.subset,
                     r.weight) for r in http.route]
    if len(destinations) == 1:
        dest, subset, _ = destinations[0]
        return route_components_pb2.RouteAction(cluster=cluster_name(dest, subset),
                                                hash_policy=_hash_policies(dest, subset, policy))
    weighted = route_components_pb2.WeightedCluster()
    hash_policies: list[route_components_pb2.RouteAction.HashPolicy] = []
    for dest, subset, weight in destinations:
        if weight == 0:
            continue  # istiod leaves out a zero-weight destination
        entry = weighted.clusters.add(name=cluster_name(dest, subset))
        entry.weight.value = weight
        hash_policies = hash_policies or _hash_policies(dest, subset, policy)
    return route_components_pb2.RouteAction(weighted_clusters=weighted, hash_policy=hash_policies)


def _string_match(matcher: virtual_service_pb2.StringMatch) -> tuple[str, str] | None:
    kind = matcher.WhichOneof("match_type")
    return None if kind is None else (kind, getattr(matcher, kind))


def _route_match(match: virtual_service_pb2.HTTPMatchRequest) -> route_components_pb2.RouteMatch:
    """HTTPMatchRequest -> RouteMatch. Header matchers use the fields every gRPC client reads
    (exact_match, prefix_match, safe_regex_match), uri the path specifiers; gRPC paths are
    `/package.Service/Method`."""
    out = route_components_pb2.RouteMatch(prefix="")
    uri = _string_match(match.uri) if match.HasField("uri") else None
    if uri is not None:
        kind, value = uri
        if kind == "exact":
            out.path = value
        elif kind == "prefix":
            out.prefix = value
        else:
            out.safe_regex.regex = value
    for name, matcher in sorted(match.headers.items()):
        found = _string_match(matcher)
        header = out.headers.add(name=name)
        if found is None:
            header.present_match = True
            continue
        kind, value = found
        if kind == "exact":
            header.exact_match = value
        elif kind == "prefix":
            header.prefix_match = value
        else:
            header.safe_regex_match.regex = value
    return out


def routes_for(target: ClientTarget, policy: Policy, exact_timeouts: bool = True) -> list[route_components_pb2.Route]:
    """No VirtualService: one route to the service's cluster, with istiod's default retries. Else
    its http routes in order, one route per match (a route without match matches everything),
    with their retries, timeout and fault (`mesh.xds.traffic`), as istiod translates them; like
    istiod, no catch-all is added: a call that matches nothing fails (UNAVAILABLE in gRPC)."""
    service_policy = policy.of(target.service)
    if service_policy.virtual_service is None:
        action = route_components_pb2.RouteAction(cluster=cluster_name(target),
                                                  hash_policy=_hash_policies(target, "", policy))
        route = route_components_pb2.Route(name="default", match=route_components_pb2.RouteMatch(prefix=""),
                                           route=action)
        traffic.apply_route_policy(route, None, exact_timeouts)
        return [route]
    routes = []
    fault_filter = traffic.fault_filter_name(service_policy.virtual_service)
    for index, http in enumerate(service_policy.virtual_service.http):
        action = _action(target, http, policy)
        name = http.name or f"route-{index}"
        for match in http.match or [None]:
            match_pb = route_components_pb2.RouteMatch(prefix="") if match is None else _route_match(match)
            route = route_components_pb2.Route(name=name, match=match_pb, route=action)
            traffic.apply_route_policy(route, http, exact_timeouts, fault_filter)
            routes.append(route)
    return routes


def route_configuration(target: ClientTarget, policy: Policy, exact_timeouts: bool = True) -> route_pb2.RouteConfiguration:
    """One virtual host whose domains are every form the service can be dialled by, with and
    without the port (gRPC matches the dialled authority against them). `exact_timeouts=False`
    (C-core clients) leaves route timeouts out of `max_stream_duration` (`mesh.xds.traffic`)."""
    hosts = target.service.hosts()
    domains = [form for host in hosts for form in (host, f"{host}:{target.port}")]
    host = route_components_pb2.VirtualHost(name=f"{target.service.fqdn}:{target.port}", domains=domains,
                                            routes=routes_for(target, policy, exact_timeouts))
    return route_pb2.RouteConfiguration(name=cluster_name(target), virtual_hosts=[host])


def traffic_policy(rule: destination_rule_pb2.DestinationRule | None, subset: str) -> destination_rule_pb2.TrafficPolicy:
    """The DestinationRule's trafficPolicy with the subset's own over it, top-level field by field
    (loadBalancer, connectionPool, outlierDetection, tls), as istiod's MergeTrafficPolicy does."""
    merged = destination_rule_pb2.TrafficPolicy()
    if rule is None:
        return merged
    merged.CopyFrom(rule.traffic_policy)
    for candidate in rule.subsets:
        if candidate.name == subset and candidate.HasField("traffic_policy"):
            for field, value in candidate.traffic_policy.ListFields():
                if field.name != "port_level_settings":
                    getattr(merged, field.name).CopyFrom(value)
    return merged


def client_tls(rule: destination_rule_pb2.DestinationRule | None, subset: str, port: int,
               merged: destination_rule_pb2.TrafficPolicy | None = None) -> destination_rule_pb2.ClientTLSSettings:
    """The ClientTLSSettings that apply to calls to `port` of a subset: the merged trafficPolicy's,
    unless a portLevelSettings entry for the port sets tls (the subset's port-level entry over the
    rule's), as istiod's MergeTrafficPolicy and its port selection do."""
    merged = merged if merged is not None else traffic_policy(rule, subset)
    tls = merged.tls
    if rule is None:
        return tls
    levels = [rule.traffic_policy] + [s.traffic_policy for s in rule.subsets if s.name == subset]
    for level in levels:
        for settings in level.port_level_settings:
            if settings.port.number == port and settings.HasField("tls"):
                tls = settings.tls
    return tls


def subset_labels(rule: destination_rule_pb2.DestinationRule | None, subset: str) -> dict[str, str] | None:
    """The labels a subset selects; None if no rule defines it."""
    for candidate in (rule.subsets if rule is not None else ()):
        if candidate.name == subset:
            return dict(candidate.labels)
    return None


def cluster(name: str, policy: Policy) -> cluster_pb2.Cluster:
    """An EDS cluster named as istiod names it (the EDS name is the cluster name), its load
    balancer from the DestinationRule as istiod's grpcgen sets it: ROUND_ROBIN, or RING_HASH for
    consistentHash (the route carries the hash policy), ring size as istiod's default when unset;
    outlier detection and circuit breakers from the merged trafficPolicy (`mesh.xds.traffic`);
    mTLS when the merged (and port-level) `tls.mode` is ISTIO_MUTUAL (`mesh.xds.security`)."""
    eds = cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads(), service_name=name)
    out = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS, eds_cluster_config=eds,
                              lb_policy=cluster_pb2.Cluster.ROUND_ROBIN)
    parsed = parse_cluster_name(name)
    if parsed is None:
        return out
    target, subset = parsed
    merged = traffic_policy(policy.of(target.service).destination_rule, subset)
    lb = merged.load_balancer
    if lb.HasField("consistent_hash"):
        hashing = lb.consistent_hash
        size = hashing.ring_hash.minimum_ring_size or hashing.minimum_ring_size or RING_SIZE
        out.lb_policy = cluster_pb2.Cluster.RING_HASH
        out.ring_hash_lb_config.minimum_ring_size.value = size
    if merged.HasField("outlier_detection"):
        detection = traffic.outlier_detection(merged.outlier_detection)
        if detection is not None:
            out.outlier_detection.CopyFrom(detection)
    breakers = traffic.circuit_breakers(merged.connection_pool)
    if breakers is not None:
        out.circuit_breakers.CopyFrom(breakers)
    tls = security.upstream_tls(target.service, client_tls(policy.of(target.service).destination_rule, subset,
                                                           target.port, merged))
    if tls is not None:
        out.transport_socket.CopyFrom(tls)
    return out  # ROUND_ROBIN, LEAST_REQUEST too (grpcio NACKs it: mesh.xds.istio warns)


def load_assignment(name: str, model: ServiceModel | None, policy: Policy = Policy()) -> endpoint_pb2.ClusterLoadAssignment:
    """Every passing instance of the service (of a subset: those whose Consul Meta has all the
    subset's labels), whatever port the client dialled: the port in the name is the service's
    port, each instance listens on its own (as WorkloadEntry ports do). No model (a service the
    catalog does not know), or a subset no DestinationRule defines, is an empty assignment, never
    "does not exist": calls fail fast with UNAVAILABLE and recover with one EDS update."""
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    endpoints = model.endpoints if model is not None else ()
    parsed = parse_cluster_name(name)
    if parsed is not None and parsed[1]:
        target, subset = parsed
        labels = subset_labels(policy.of(target.service).destination_rule, subset)
        endpoints = () if labels is None else tuple(
            e for e in endpoints if all(e.meta.get(k) == v for k, v in labels.items()))
    if endpoints:
        locality = assignment.endpoints.add(locality=LOCALITY)
        locality.load_balancing_weight.value = 1  # without it every RPC fails in grpcio
        for endpoint in endpoints:
            address = _address(endpoint.ip, endpoint.port)
            locality.lb_endpoints.add(endpoint=endpoint_components_pb2.Endpoint(address=address),
                                      health_status=health_check_pb2.HEALTHY)
    return assignment


# ---- server side (xDS-managed gRPC servers) ---------------------------------------------------


def server_http_filters(identity: WorkloadIdentity, policy: Policy) -> list[hcm_pb2.HttpFilter]:
    """RBAC from AuthorizationPolicy (DENY, then ALLOW: Istio's order), then the router; only the
    router when no AuthorizationPolicy selects the workload."""
    return [*security.rbac_filters(identity, policy), _router()]


def server_transport_socket(identity: WorkloadIdentity, port: int, policy: Policy) -> base_pb2.TransportSocket | None:
    """mTLS (a client certificate of the mesh CA required) when the workload's PeerAuthentication
    makes `port` STRICT; None (plaintext) for DISABLE."""
    return security.downstream_tls() if security.server_mtls(identity, port, policy) == "STRICT" else None


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
    transport_socket = server_transport_socket(identity, port, policy)
    suffix = "plaintext" if transport_socket is None else "mtls"
    chain = listener_components_pb2.FilterChain(
        name=f"inbound-{suffix}", filters=[listener_components_pb2.Filter(name=HCM_FILTER, typed_config=pack(hcm))])
    if transport_socket is not None:
        chain.transport_socket.CopyFrom(transport_socket)
    return listener_pb2.Listener(name=name, address=_address(host, port), filter_chains=[chain])
