"""Istio resources -> Policy -> xDS, as pure functions: what is accepted, what is rejected and why,
what is warned about, and the shapes translation sends (istiod's grpcgen names and fields)."""

from __future__ import annotations

import shutil
import types
from pathlib import Path

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.v3.percent_pb2 import FractionalPercent

from mesh.xds.catalog import Endpoint
from mesh.xds.istio import IGNORED, Policy, _State, compile_policy
from mesh.xds.names import ClientTarget, ServiceKey, cluster_name
from mesh.xds.traffic import FAULT_FILTER, fault_filter_name
from mesh.xds.translate import client_listener, cluster, load_assignment, route_configuration, translate_service

REPO = Path(__file__).resolve().parents[2]
ISTIO = REPO / "istio"
PRICING = ServiceKey("pricing", "default")
TARGET = ClientTarget(PRICING, 50061)

RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pricing}
spec:
  host: pricing
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def service(http: str, api_version: str = "networking.istio.io/v1") -> str:
    return f"apiVersion: {api_version}\nkind: VirtualService\nmetadata: {{name: pricing}}\nspec:\n  hosts: [pricing]\n" \
           f"  http: {http}\n"


def compile_dir(directory: Path, state: _State | None = None):
    return compile_policy(directory.glob("*.yaml"), "default", state or _State())


def folder(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


def test_the_shipped_default_files_are_valid_and_keep_one_route_to_every_instance():
    policy, rejections, warnings = compile_dir(ISTIO)
    assert (rejections, warnings) == ({}, [])
    assert policy.of(PRICING).destination_rule is not None and policy.of(PRICING).virtual_service is None
    assert route_configuration(TARGET, policy) == route_configuration(TARGET, Policy())


@pytest.mark.parametrize("scenario", sorted(p.name for p in (ISTIO / "scenarios").iterdir()))
def test_every_shipped_scenario_applies_on_top_of_the_defaults(scenario, tmp_path):
    defaults = [p for p in ISTIO.glob("*.yaml") if p.name in ("pricing.yaml", "catalog.yaml")]
    (tmp_path / "defaults").mkdir()
    for source in defaults:
        shutil.copy(source, tmp_path / "defaults")
    before, _, _ = compile_dir(tmp_path / "defaults")
    for source in [*defaults, *(ISTIO / "scenarios" / scenario).glob("*.yaml")]:
        shutil.copy(source, tmp_path)
    policy, rejections, warnings = compile_dir(tmp_path)
    assert (rejections, warnings) == ({}, [])
    assert policy != before  # the scenario changes what the clients get
    assert (ISTIO / "scenarios" / scenario / "README.md").exists()


@pytest.mark.parametrize("api_version", ["networking.istio.io/v1", "networking.istio.io/v1beta1",
                                         "networking.istio.io/v1alpha3"])
def test_every_api_version_istio_serves_is_read(api_version, tmp_path):
    http = "[{route: [{destination: {host: pricing, subset: v2}}]}]"
    policy, rejections, _ = compile_dir(folder(tmp_path, rule=RULE, vs=service(http, api_version)))
    assert rejections == {} and policy.of(PRICING).virtual_service.http[0].route[0].destination.subset == "v2"


def test_several_documents_in_one_file(tmp_path):
    http = "[{route: [{destination: {host: pricing, subset: v1}}]}]"
    policy, rejections, _ = compile_dir(folder(tmp_path, all=RULE + "---\n" + service(http)))
    assert rejections == {} and policy.of(PRICING).virtual_service is not None


INVALID = {
    "bad YAML": ("http: [{route: [", "not readable YAML"),
    "unknown field": ("[{route: [{destination: {host: pricing, subset: v1}}], retriez: {attempts: 3}}]",
                      'no field named "retriez"'),
    "undefined subset": ("[{route: [{destination: {host: pricing, subset: v3}}]}]",
                         "subset 'v3': no DestinationRule of pricing.default.svc.cluster.local defines it"),
    "weights not 100": ("[{route: [{destination: {host: pricing, subset: v1}, weight: 90},"
                        " {destination: {host: pricing, subset: v2}, weight: 20}]}]", "sum to 110, not 100"),
    "bad duration": ("[{route: [{destination: {host: pricing, subset: v1}}], timeout: 2 seconds}]", "timeout"),
    "no mesh service": ("[{route: [{destination: {host: www.example.com}}]}]", "is no mesh service"),
}


@pytest.mark.parametrize("case", INVALID)
def test_an_invalid_resource_is_rejected_naming_file_resource_and_reason(case, tmp_path):
    http, reason = INVALID[case]
    text = service(http) if case != "bad YAML" else service("[]").replace("  http: []\n", http)
    policy, rejections, _ = compile_dir(folder(tmp_path, rule=RULE, vs=text))
    [(what, why)] = rejections.items()
    assert what.startswith(str(tmp_path / "vs.yaml"))
    if case != "bad YAML":
        assert what.endswith("VirtualService default/pricing")
    assert reason in why, why
    assert policy.of(PRICING).virtual_service is None  # nothing good to fall back on
    assert policy.of(PRICING).destination_rule is not None  # the other file is unaffected


@pytest.mark.parametrize("case", INVALID)
def test_a_rejected_edit_keeps_the_last_good_version_and_a_fix_clears_it(case, tmp_path):
    state = _State()
    good = service("[{route: [{destination: {host: pricing, subset: v2}}]}]")
    directory = folder(tmp_path, rule=RULE, vs=good)
    before, rejections, _ = compile_dir(directory, state)
    assert rejections == {}
    http, _ = INVALID[case]
    (directory / "vs.yaml").write_text(service(http) if case != "bad YAML" else http)
    during, rejections, _ = compile_dir(directory, state)
    assert rejections and during == before
    (directory / "vs.yaml").write_text(good.replace("v2", "v1"))
    after, rejections, _ = compile_dir(directory, state)
    assert rejections == {} and after.of(PRICING).virtual_service.http[0].route[0].destination.subset == "v1"


def test_fields_proxyless_grpc_cannot_honour_are_warned_about_and_the_rest_applies(tmp_path):
    http = "[{route: [{destination: {host: pricing, subset: v2}}], mirror: {host: pricing}, corsPolicy: {maxAge: 5s}}]"
    policy, rejections, warnings = compile_dir(folder(tmp_path, rule=RULE, vs=service(http)))
    assert rejections == {}
    assert sorted((Path(file).name, ref, field, why) for file, ref, field, why in warnings) == [
        ("vs.yaml", "VirtualService default/pricing", f"spec.http[0].{field}", "proxyless gRPC cannot honour it")
        for field in ("corsPolicy", "mirror")]
    assert policy.of(PRICING).virtual_service.http[0].route[0].destination.subset == "v2"


def endpoint(instance_id: str, port: int, **meta: str) -> Endpoint:
    return Endpoint(instance_id, "127.0.0.1", port, types.MappingProxyType(meta))


def test_subset_clusters_get_the_endpoints_whose_meta_matches_their_labels(tmp_path):
    policy, _, _ = compile_dir(folder(tmp_path, rule=RULE))
    model = translate_service(PRICING, (endpoint("p1", 1, version="v1"), endpoint("p2", 2, version="v2"),
                                        endpoint("p3", 3, version="v2")), policy)

    def ports(subset: str) -> list[int]:
        assignment = load_assignment(cluster_name(TARGET, subset), model, policy)
        return [e.endpoint.address.socket_address.port_value for loc in assignment.endpoints for e in loc.lb_endpoints]

    assert (ports(""), ports("v1"), ports("v2"), ports("v9")) == ([1, 2, 3], [1], [2, 3], [])
    assert cluster(cluster_name(TARGET, "v2"), policy).eds_cluster_config.service_name == cluster_name(TARGET, "v2")


def test_weighted_destinations_become_weighted_clusters_and_matches_routes_in_order(tmp_path):
    http = ("[{match: [{headers: {x-user-tier: {exact: beta}}}, {headers: {x-tier: {prefix: be}}},"
            " {headers: {x-t: {regex: 'b.*'}}}, {uri: {exact: /shop.pricing.v1.PricingService/GetPrice}},"
            " {uri: {prefix: /shop.pricing.v1.}}], route: [{destination: {host: pricing, subset: v2}}]},"
            " {route: [{destination: {host: pricing, subset: v1}, weight: 90},"
            " {destination: {host: pricing, subset: v2}, weight: 10}]}]")
    policy, rejections, _ = compile_dir(folder(tmp_path, rule=RULE, vs=service(http)))
    assert rejections == {}
    routes = route_configuration(TARGET, policy).virtual_hosts[0].routes
    assert [r.route.cluster for r in routes[:5]] == [cluster_name(TARGET, "v2")] * 5
    assert routes[0].match.headers[0].name == "x-user-tier" and routes[0].match.headers[0].exact_match == "beta"
    assert routes[1].match.headers[0].prefix_match == "be"
    assert routes[2].match.headers[0].safe_regex_match.regex == "b.*"
    assert routes[3].match.path == "/shop.pricing.v1.PricingService/GetPrice"
    assert routes[4].match.prefix == "/shop.pricing.v1."
    last = routes[5]
    assert last.match.prefix == "" and not last.match.headers
    assert [(c.name, c.weight.value) for c in last.route.weighted_clusters.clusters] == [
        (cluster_name(TARGET, "v1"), 90), (cluster_name(TARGET, "v2"), 10)]


def test_least_request_is_served_as_round_robin_with_a_warning_and_consistent_hash_as_ring_hash(tmp_path):
    rule = RULE.replace("  subsets:\n", "  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n  subsets:\n").replace(
        "{name: v2, labels: {version: v2}}",
        "{name: v2, labels: {version: v2}, trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}}")
    policy, rejections, warnings = compile_dir(folder(tmp_path, rule=rule))
    assert rejections == {}
    assert [field for _, _, field, _ in warnings] == ["spec.trafficPolicy.loadBalancer.simple"]
    assert cluster(cluster_name(TARGET), policy).lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert cluster(cluster_name(TARGET, "v1"), policy).lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    hashed = cluster(cluster_name(TARGET, "v2"), policy)
    assert hashed.lb_policy == cluster_pb2.Cluster.RING_HASH and hashed.ring_hash_lb_config.minimum_ring_size.value
    http = "[{route: [{destination: {host: pricing, subset: v2}}]}]"
    policy, _, _ = compile_dir(folder(tmp_path, rule=rule, vs=service(http)))
    [route] = route_configuration(TARGET, policy).virtual_hosts[0].routes
    assert [p.header.header_name for p in route.route.hash_policy] == ["x-user"]


def test_an_unsupported_load_balancer_is_rejected(tmp_path):
    rule = RULE.replace("  subsets:\n", "  trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}\n  subsets:\n")
    _, rejections, _ = compile_dir(folder(tmp_path, rule=rule))
    assert "PASSTHROUGH" in " ".join(rejections.values())


def test_a_host_consul_does_not_know_is_rejected_once_the_services_are_known(tmp_path):
    http = "[{route: [{destination: {host: pricing, subset: v1}}]}]"
    directory = folder(tmp_path, rule=RULE, vs=service(http))
    catalog = ServiceKey("catalog", "default")
    _, rejections, _ = compile_policy(directory.glob("*.yaml"), "default", _State(), frozenset({catalog}))
    assert sorted(rejections) == [f"{directory / 'rule.yaml'}: DestinationRule default/pricing",
                                  f"{directory / 'vs.yaml'}: VirtualService default/pricing"]
    assert "Consul has no service 'pricing' in namespace 'default'" in rejections[sorted(rejections)[0]]
    _, rejections, _ = compile_policy(directory.glob("*.yaml"), "default", _State(), frozenset({catalog, PRICING}))
    assert rejections == {}


def test_a_virtual_service_of_a_known_service_is_accepted(tmp_path):
    http = "[{route: [{destination: {host: pricing, subset: v1}}]}]"
    directory = folder(tmp_path, rule=RULE, vs=service(http))
    policy, rejections, _ = compile_policy(directory.glob("*.yaml"), "default", _State(), frozenset({PRICING}))
    assert rejections == {} and policy.of(PRICING).virtual_service is not None


def test_fields_not_translated_yet_and_fields_grpc_ignores_are_named(tmp_path):
    http = ("[{route: [{destination: {host: pricing, subset: v2}}],"
            " retries: {attempts: 6, perTryTimeout: 1s, retryOn: 'unavailable,5xx,connect-failure',"
            " retryRemoteLocalities: true}}]")
    rule = RULE.replace("  subsets:\n", "  trafficPolicy: {tls: {mode: ISTIO_MUTUAL, sni: a.example}, outlierDetection: {"
                        "minHealthPercent: 50}, connectionPool: {tcp: {maxConnections: 3}, http: {"
                        "http2MaxRequests: 10, maxRetries: 2}}}\n  subsets:\n")
    _, rejections, warnings = compile_dir(folder(tmp_path, rule=rule, vs=service(http)))
    assert rejections == {}
    assert sorted((field, why) for *_, field, why in warnings) == [
        ("spec.http[0].retries.attempts", "gRPC makes at most 5 attempts: 6 retries become 4"),
        ("spec.http[0].retries.perTryTimeout", IGNORED["retries.perTryTimeout"]),
        ("spec.http[0].retries.retryOn", "gRPC retries only on gRPC codes (cancelled, deadline-exceeded, internal, "
                                         "resource-exhausted, unavailable): 5xx, connect-failure ignored"),
        ("spec.http[0].retries.retryRemoteLocalities", "not translated yet"),
        ("spec.trafficPolicy.connectionPool.http.maxRetries", IGNORED["connectionPool.http"]),
        ("spec.trafficPolicy.connectionPool.tcp.maxConnections", IGNORED["connectionPool.tcp"]),
        ("spec.trafficPolicy.outlierDetection.minHealthPercent", IGNORED["outlierDetection.minHealthPercent"]),
        ("spec.trafficPolicy.tls.sni", "not translated yet")]


POLICY_INVALID = {
    "negative attempts": ("retries: {attempts: -1}", "spec.http[0].retries.attempts -1: must not be negative"),
    "unknown retry condition": ("retries: {attempts: 2, retryOn: 'unavailable,flaky'}",
                                "spec.http[0].retries.retryOn 'flaky': not a retry condition"),
    "sub-millisecond timeout": ("timeout: 0.0005s", "spec.http[0].timeout 0.000500s: a duration must be at least 1ms"),
    "abort without a status": ("fault: {abort: {percentage: {value: 10}}}", "spec.http[0].fault.abort: needs grpcStatus"),
    "unknown grpc status": ("fault: {abort: {grpcStatus: UNAVAILABEL, percentage: {value: 10}}}",
                            "grpcStatus 'UNAVAILABEL': not a gRPC status code name"),
    "percentage over 100": ("fault: {delay: {fixedDelay: 1s, percentage: {value: 120}}}",
                            "spec.http[0].fault.delay.percentage 120.0: a percentage is between 0 and 100"),
    "exponential delay": ("fault: {delay: {exponentialDelay: 1s}}", "only fixedDelay is supported"),
}


@pytest.mark.parametrize("case", POLICY_INVALID)
def test_invalid_retries_timeouts_and_faults_are_rejected_with_the_field(case, tmp_path):
    extra, reason = POLICY_INVALID[case]
    http = f"[{{route: [{{destination: {{host: pricing, subset: v2}}}}], {extra}}}]"
    policy, rejections, _ = compile_dir(folder(tmp_path, rule=RULE, vs=service(http)))
    [(what, why)] = rejections.items()
    assert what.endswith("vs.yaml: VirtualService default/pricing") and reason in why, why
    assert policy.of(PRICING).virtual_service is None


def test_retries_timeout_and_fault_reach_the_route_as_istiod_sends_them(tmp_path):
    http = ("[{route: [{destination: {host: pricing, subset: v2}}], timeout: 1.5s,"
            " retries: {attempts: 3, retryOn: 'unavailable,resource-exhausted,503', backoff: 0.05s},"
            " fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 12.5}},"
            " delay: {fixedDelay: 0.2s, percentage: {value: 50}}}}]")
    policy, rejections, warnings = compile_dir(folder(tmp_path, rule=RULE, vs=service(http)))
    assert (rejections, warnings) == ({}, [])
    [route] = route_configuration(TARGET, policy).virtual_hosts[0].routes
    retry = route.route.retry_policy
    assert (retry.num_retries.value, retry.retry_on, list(retry.retriable_status_codes)) == (
        3, "unavailable,resource-exhausted,retriable-status-codes", [503])
    assert retry.retry_back_off.base_interval.ToMilliseconds() == 50
    assert route.route.timeout.ToMilliseconds() == 1500
    assert route.route.max_stream_duration.max_stream_duration.ToMilliseconds() == 1500
    fault = fault_pb2.HTTPFault()
    [(name, config)] = route.typed_per_filter_config.items()
    assert name == fault_filter_name(policy.of(PRICING).virtual_service) and name.startswith(FAULT_FILTER + ".")
    config.Unpack(fault)
    assert (fault.abort.grpc_status, fault.abort.percentage.numerator) == (14, 125_000)
    assert (fault.delay.fixed_delay.ToMilliseconds(), fault.delay.percentage.numerator) == (200, 500_000)
    assert fault.abort.percentage.denominator == fault.delay.percentage.denominator == FractionalPercent.MILLION
    # grpcio fires max_stream_duration early (grpc/grpc#34547): C-core clients get the timeout only
    # in RouteAction.timeout, which the Python runtime applies as the call's deadline
    [core_route] = route_configuration(TARGET, policy, exact_timeouts=False).virtual_hosts[0].routes
    assert core_route.route.timeout.ToMilliseconds() == 1500 and not core_route.route.HasField("max_stream_duration")


def test_durations_are_read_as_istio_reads_them_go_style_included(tmp_path):
    http = ("[{route: [{destination: {host: pricing, subset: v2}}], timeout: 1m30s,"
            " retries: {attempts: 2, perTryTimeout: 250ms}, fault: {delay: {fixedDelay: 0.5s, percentage: {value: 1}}}}]")
    rule = RULE.replace("  subsets:\n", "  trafficPolicy: {outlierDetection: {interval: 1h, baseEjectionTime: 1500us}}\n"
                        "  subsets:\n")
    policy, rejections, _ = compile_dir(folder(tmp_path, rule=rule, vs=service(http)))
    assert "spec.trafficPolicy.outlierDetection.baseEjectionTime 0.001500s: a duration must be at least 1ms, in " \
           "whole milliseconds" in " ".join(rejections.values())
    policy, rejections, _ = compile_dir(folder(tmp_path, rule=rule.replace("1500us", "2m"), vs=service(http)))
    assert rejections == {}
    [route] = route_configuration(TARGET, policy).virtual_hosts[0].routes
    fault = fault_pb2.HTTPFault()
    route.typed_per_filter_config[fault_filter_name(policy.of(PRICING).virtual_service)].Unpack(fault)
    assert (route.route.timeout.ToMilliseconds(), route.route.retry_policy.per_try_timeout.ToMilliseconds(),
            fault.delay.fixed_delay.ToMilliseconds()) == (90_000, 250, 500)
    detection = cluster(cluster_name(TARGET), policy).outlier_detection
    assert (detection.interval.ToSeconds(), detection.base_ejection_time.ToSeconds()) == (3600, 120)


def test_routes_without_retries_get_istiods_default_and_zero_attempts_turn_retries_off(tmp_path):
    [default] = route_configuration(TARGET, Policy()).virtual_hosts[0].routes
    assert (default.route.retry_policy.num_retries.value, default.route.retry_policy.retry_on) == (
        2, "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes")
    http = "[{route: [{destination: {host: pricing, subset: v2}}], retries: {attempts: 0}}]"
    policy, _, _ = compile_dir(folder(tmp_path, rule=RULE, vs=service(http)))
    [route] = route_configuration(TARGET, policy).virtual_hosts[0].routes
    assert not route.route.HasField("retry_policy")


def test_outlier_detection_becomes_failure_percentage_ejection_with_success_rate_off(tmp_path):
    rule = RULE.replace("  subsets:\n", "  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 7,"
                        " consecutiveGatewayErrors: 4, interval: 1s, baseEjectionTime: 20s, maxEjectionPercent: 50},"
                        " connectionPool: {http: {http2MaxRequests: 8}}}\n  subsets:\n").replace(
        "{name: v2, labels: {version: v2}}", "{name: v2, labels: {version: v2}, trafficPolicy: {outlierDetection: {"
        "consecutive5xxErrors: 0, consecutiveGatewayErrors: 0}}}")
    policy, rejections, warnings = compile_dir(folder(tmp_path, rule=rule))
    assert (rejections, warnings) == ({}, [])
    out = cluster(cluster_name(TARGET, "v1"), policy)  # the subset inherits the top-level policy
    detection = out.outlier_detection
    assert (detection.failure_percentage_request_volume.value, detection.failure_percentage_threshold.value,
            detection.enforcing_failure_percentage.value, detection.failure_percentage_minimum_hosts.value) == (
        4, 85, 100, 1)
    assert detection.HasField("enforcing_success_rate") and detection.enforcing_success_rate.value == 0
    assert (detection.interval.ToSeconds(), detection.base_ejection_time.ToSeconds(),
            detection.max_ejection_percent.value) == (1, 20, 50)
    assert [t.max_requests.value for t in out.circuit_breakers.thresholds] == [8]
    assert not cluster(cluster_name(TARGET, "v2"), policy).HasField("outlier_detection")  # both counts 0: off


def test_istio_defaults_fill_an_outlier_detection_that_sets_little(tmp_path):
    rule = RULE.replace("  subsets:\n", "  trafficPolicy: {outlierDetection: {interval: 2s}}\n  subsets:\n")
    policy, _, _ = compile_dir(folder(tmp_path, rule=rule))
    detection = cluster(cluster_name(TARGET), policy).outlier_detection
    assert (detection.failure_percentage_request_volume.value, detection.base_ejection_time.ToSeconds(),
            detection.max_ejection_percent.value) == (5, 30, 10)


def test_every_client_listener_has_the_fault_filter_before_the_router_named_after_the_faults(tmp_path):
    hcm = hcm_pb2.HttpConnectionManager()
    client_listener("pricing:50061", TARGET, Policy()).api_listener.api_listener.Unpack(hcm)
    assert [f.name for f in hcm.http_filters] == [FAULT_FILTER, "envoy.filters.http.router"]

    def names(percent: int) -> tuple[str, set[str]]:
        http = (f"[{{route: [{{destination: {{host: pricing, subset: v2}}}}], fault: {{abort: {{grpcStatus: UNAVAILABLE,"
                f" percentage: {{value: {percent}}}}}}}}}]")
        policy, _, _ = compile_dir(folder(tmp_path, rule=RULE, vs=service(http)))
        client_listener("pricing:50061", TARGET, policy).api_listener.api_listener.Unpack(hcm)
        routes = route_configuration(TARGET, policy).virtual_hosts[0].routes
        return hcm.http_filters[0].name, {key for route in routes for key in route.typed_per_filter_config}

    # grpcio keeps the first config it saw on a filter instance when only the values change: an
    # edited fault gets a new instance name, the same one in the listener and in the routes
    (hundred, used_100), (zero, used_0) = names(100), names(0)
    assert used_100 == {hundred} and used_0 == {zero} and hundred != zero and names(100)[0] == hundred


def test_a_second_resource_of_a_kind_for_one_host_is_rejected(tmp_path):
    policy, rejections, _ = compile_dir(folder(tmp_path, a=RULE, b=RULE.replace("name: pricing}", "name: pricing-2}")))
    assert rejections == {f"{tmp_path / 'b.yaml'}: DestinationRule default/pricing-2":
                          "DestinationRule default/pricing already applies to pricing.default.svc.cluster.local"}
    assert policy.of(PRICING).destination_rule is not None
