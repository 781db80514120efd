"""Shapes of the resources translate() produces: the ones grpcio, grpc-go and grpc-js accept."""

from __future__ import annotations

import types

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from mesh.xds.catalog import Catalog, Endpoint
from mesh.xds.translate import CLUSTER, ENDPOINT, LISTENER, ROUTE, Policy, server_listener, translate

ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
SERVER_NAME = "grpc/server?xds.resource.listening_address=127.0.0.1:50123"


def endpoint(instance_id: str, port: int, **meta: str) -> Endpoint:
    return Endpoint(instance_id, "127.0.0.1", port, types.MappingProxyType(meta))


CATALOG = Catalog.of({
    "catalog": [endpoint("catalog-2", 5002, version="v1"), endpoint("catalog-1", 5001, version="v1")],
    "payments": [],  # registered, nothing passing
})


def hcm_of(any_message) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager()
    assert any_message.Unpack(hcm)
    return hcm


def test_names_follow_the_runtime_contract():
    resources = translate(CATALOG)
    assert sorted(resources[LISTENER]) == ["catalog", "payments"]
    assert sorted(resources[ROUTE]) == ["catalog", "payments"]
    assert sorted(resources[CLUSTER]) == ["outbound|catalog", "outbound|payments"]
    assert sorted(resources[ENDPOINT]) == ["outbound|catalog", "outbound|payments"]


def test_client_listener_uses_rds_over_ads_with_the_router_last():
    listener = translate(CATALOG)[LISTENER]["catalog"]
    hcm = hcm_of(listener.api_listener.api_listener)
    assert hcm.rds.route_config_name == "catalog"
    assert hcm.rds.config_source.HasField("ads")
    assert hcm.http_filters and hcm.http_filters[-1].typed_config.type_url == ROUTER_TYPE


def test_route_configuration_has_one_virtual_host_with_a_default_route():
    config = translate(CATALOG)[ROUTE]["catalog"]
    [host] = config.virtual_hosts
    assert list(host.domains) == ["catalog"]
    [route] = host.routes
    assert route.match.prefix == "" and route.route.cluster == "outbound|catalog"


def test_cluster_is_eds_over_ads_round_robin_without_outlier_detection():
    cluster = translate(CATALOG)[CLUSTER]["outbound|catalog"]
    assert cluster.type == cluster_pb2.Cluster.EDS
    assert cluster.eds_cluster_config.eds_config.HasField("ads")
    assert cluster.eds_cluster_config.service_name == "outbound|catalog"
    assert cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert not cluster.HasField("outlier_detection")


def test_load_assignment_has_one_weighted_locality_of_healthy_endpoints():
    assignment = translate(CATALOG)[ENDPOINT]["outbound|catalog"]
    [locality] = assignment.endpoints
    assert locality.load_balancing_weight.value >= 1  # grpcio fails every RPC without it
    assert [(e.endpoint.address.socket_address.port_value, e.health_status) for e in locality.lb_endpoints] == [
        (5001, health_check_pb2.HEALTHY), (5002, health_check_pb2.HEALTHY)]


def test_service_without_passing_instances_gets_an_empty_load_assignment():
    resources = translate(CATALOG)
    assert "payments" in resources[LISTENER] and "outbound|payments" in resources[CLUSTER]
    assert resources[ENDPOINT]["outbound|payments"].cluster_name == "outbound|payments"
    assert not resources[ENDPOINT]["outbound|payments"].endpoints


def test_server_listener_is_built_from_the_requested_name():
    listener = server_listener(SERVER_NAME, "catalog", Policy())
    assert listener.name == SERVER_NAME
    address = listener.address.socket_address
    assert (address.address, address.port_value) == ("127.0.0.1", 50123)
    [chain] = listener.filter_chains
    assert not chain.HasField("transport_socket")  # plaintext until PeerAuthentication
    [network_filter] = chain.filters
    hcm = hcm_of(network_filter.typed_config)
    [route] = hcm.route_config.virtual_hosts[0].routes
    assert route.HasField("non_forwarding_action")
    assert hcm.http_filters[-1].typed_config.type_url == ROUTER_TYPE


def test_server_listener_rejects_names_it_cannot_parse():
    assert server_listener("catalog", "catalog", Policy()) is None
    assert server_listener("grpc/server?xds.resource.listening_address=127.0.0.1", "x", Policy()) is None
    assert server_listener("grpc/server?xds.resource.listening_address=[::1]:7000", "x", Policy()).address \
        .socket_address.address == "::1"


def test_translation_is_deterministic():
    first, second = translate(CATALOG), translate(Catalog.of(dict(CATALOG.services)))
    for type_url in first:
        assert {n: r.SerializeToString(deterministic=True) for n, r in first[type_url].items()} == {
            n: r.SerializeToString(deterministic=True) for n, r in second[type_url].items()}
