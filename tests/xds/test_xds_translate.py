"""Names and shapes of the resources: istiod's names, and shapes grpcio, grpc-go and grpc-js accept."""

from __future__ import annotations

import types

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from mesh.xds.catalog import Endpoint
from mesh.xds.names import (
    ClientTarget,
    ServiceKey,
    cluster_name,
    parse_client_listener,
    parse_cluster_name,
    parse_server_listener,
)
from mesh.xds.translate import (
    Policy,
    TranslationError,
    WorkloadIdentity,
    client_listener,
    cluster,
    load_assignment,
    route_configuration,
    server_listener,
    translate_service,
)

ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
CATALOG = ServiceKey("catalog", "default")
TARGET = ClientTarget(CATALOG, 7000)


def endpoint(instance_id: str, port: int, address: str = "127.0.0.1", **meta: str) -> Endpoint:
    return Endpoint(instance_id, address, port, types.MappingProxyType(meta))


def hcm_of(any_message) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager()
    assert any_message.Unpack(hcm)
    return hcm


@pytest.mark.parametrize("name", ["catalog:7000", "catalog.default:7000", "catalog.default.svc:7000",
                                  "catalog.default.svc.cluster.local:7000"])
def test_every_host_form_istiod_answers_names_the_same_service(name):
    assert parse_client_listener(name, namespace="default") == TARGET


def test_a_bare_name_takes_the_asking_nodes_namespace():
    assert parse_client_listener("catalog:7000", namespace="shop").service == ServiceKey("catalog", "shop")


@pytest.mark.parametrize("name", ["catalog", "catalog:", "catalog:0", "catalog:x", "a.b.c:7000",
                                  "catalog.example.com:1", "xds.istio.io/grpc/lds/inbound/127.0.0.1:7000"])
def test_names_istiod_would_not_answer_as_client_listeners(name):
    assert parse_client_listener(name, namespace="default") is None


def test_cluster_names_round_trip_like_istiods_subset_keys():
    assert cluster_name(TARGET) == "outbound|7000||catalog.default.svc.cluster.local"
    assert cluster_name(TARGET, "v2") == "outbound|7000|v2|catalog.default.svc.cluster.local"
    assert parse_cluster_name("outbound|7000|v2|catalog.default.svc.cluster.local") == (TARGET, "v2")
    assert parse_cluster_name("outbound|catalog") is None
    assert parse_cluster_name("inbound|7000||catalog.default.svc.cluster.local") is None


def test_server_listener_names():
    assert parse_server_listener("xds.istio.io/grpc/lds/inbound/127.0.0.1:50123") == ("127.0.0.1", 50123)
    assert parse_server_listener("xds.istio.io/grpc/lds/inbound/[::1]:7000") == ("::1", 7000)
    assert parse_server_listener("xds.istio.io/grpc/lds/inbound/127.0.0.1") is None
    assert parse_server_listener("grpc/server?xds.resource.listening_address=127.0.0.1:1") is None


def test_client_listener_is_named_as_asked_and_uses_rds_over_ads_with_the_router_last():
    listener = client_listener("catalog.default:7000", TARGET, Policy())
    assert listener.name == "catalog.default:7000"
    hcm = hcm_of(listener.api_listener.api_listener)
    assert hcm.rds.route_config_name == "outbound|7000||catalog.default.svc.cluster.local"
    assert hcm.rds.config_source.HasField("ads")
    assert hcm.http_filters and hcm.http_filters[-1].typed_config.type_url == ROUTER_TYPE


def test_route_configuration_matches_every_dialled_form_and_routes_to_the_cluster():
    config = route_configuration(TARGET, Policy())
    [host] = config.virtual_hosts
    assert {"catalog:7000", "catalog.default:7000", "catalog.default.svc.cluster.local:7000"} <= set(host.domains)
    [route] = host.routes
    assert route.match.prefix == "" and route.route.cluster == cluster_name(TARGET)


def test_cluster_is_eds_over_ads_round_robin_without_outlier_detection():
    built = cluster(cluster_name(TARGET), Policy())
    assert built.type == cluster_pb2.Cluster.EDS
    assert built.eds_cluster_config.eds_config.HasField("ads")
    assert built.eds_cluster_config.service_name == cluster_name(TARGET)
    assert built.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert not built.HasField("outlier_detection")


def test_load_assignment_has_one_weighted_locality_of_every_instance_on_its_own_port():
    model = translate_service(CATALOG, (endpoint("catalog-2", 5002), endpoint("catalog-1", 5001)), Policy())
    [locality] = load_assignment(cluster_name(TARGET), model).endpoints
    assert locality.load_balancing_weight.value >= 1  # grpcio fails every RPC without it
    assert sorted((e.endpoint.address.socket_address.port_value, e.health_status) for e in locality.lb_endpoints) == [
        (5001, health_check_pb2.HEALTHY), (5002, health_check_pb2.HEALTHY)]


def test_unknown_or_empty_service_gets_an_empty_load_assignment():
    for model in (None, translate_service(CATALOG, (), Policy())):
        assignment = load_assignment(cluster_name(TARGET), model)
        assert assignment.cluster_name == cluster_name(TARGET) and not assignment.endpoints


def test_translation_rejects_an_address_that_is_not_an_ip():
    with pytest.raises(TranslationError, match=r"'catalog-x': address 'catalog\.example' is not an IP"):
        translate_service(CATALOG, (endpoint("catalog-1", 5001), endpoint("catalog-x", 5002, "catalog.example")),
                          Policy())


def test_server_listener_serves_on_the_asked_address():
    name = "xds.istio.io/grpc/lds/inbound/127.0.0.1:50123"
    listener = server_listener(name, "127.0.0.1", 50123, WorkloadIdentity.of("default", {"app": "catalog"}), Policy())
    assert listener.name == name
    address = listener.address.socket_address
    assert (address.address, address.port_value) == ("127.0.0.1", 50123)
    [chain] = listener.filter_chains
    assert not chain.HasField("transport_socket")  # plaintext until PeerAuthentication
    [network_filter] = chain.filters
    hcm = hcm_of(network_filter.typed_config)
    [route] = hcm.route_config.virtual_hosts[0].routes
    assert route.HasField("non_forwarding_action")
    assert hcm.http_filters[-1].typed_config.type_url == ROUTER_TYPE
