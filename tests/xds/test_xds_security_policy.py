"""PeerAuthentication and AuthorizationPolicy -> Policy -> mTLS modes and RBAC filters, as pure
functions (mesh.xds.istio, mesh.xds.security): selection and precedence, istiod's proxyless PERMISSIVE,
the RBAC shapes istiod's authz model generates, Istio's evaluation order, rejections and warnings,
and that without security resources nothing changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_http_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from mesh.xds.istio import Policy, _State, compile_policy
from mesh.xds.security import RBAC_FILTER, RBAC_FILTER_DENY, istio_mtls_mode, mtls_mode, rbac_filters
from mesh.xds.translate import ROUTER_FILTER, WorkloadIdentity, cluster, server_listener

REPO = Path(__file__).resolve().parents[2]
ISTIO = REPO / "istio"
ORDERS = {"app": "orders"}
MESHED = {"security.istio.io/tlsMode": "istio"}


def peer(name: str, spec: str, namespace: str = "default", api: str = "security.istio.io/v1") -> str:
    return f"apiVersion: {api}\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {namespace}}}\n" \
           f"spec: {spec}\n---\n"


def authz(name: str, spec: str, namespace: str = "default", api: str = "security.istio.io/v1") -> str:
    return f"apiVersion: {api}\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\n" \
           f"spec: {spec}\n---\n"


def compile_text(tmp_path: Path, text: str, state: _State | None = None):
    (tmp_path / "security.yaml").write_text(text)
    return compile_policy([tmp_path / "security.yaml"], "default", state or _State())


def policy_of(tmp_path: Path, text: str) -> Policy:
    policy, rejections, _ = compile_text(tmp_path, text)
    assert rejections == {}
    return policy


# ---- the default changes nothing ----------------------------------------------------------------


def test_the_shipped_istio_files_are_read_without_a_complaint():
    policy, rejections, warnings = compile_policy(ISTIO.glob("*.yaml"), "default", _State())
    assert (rejections, warnings) == ({}, [])
    assert mtls_mode("default", ORDERS, 50091, policy) == "STRICT"
    assert [f.name for f in rbac_filters(WorkloadIdentity.of("default", ORDERS), policy)] == [RBAC_FILTER]


def test_without_security_resources_nothing_changes(tmp_path):
    files = [path for path in ISTIO.glob("*.yaml") if path.name != "security.yaml"]
    policy, rejections, warnings = compile_policy(files, "default", _State())
    assert (rejections, warnings) == ({}, [])
    assert (policy.peer_authentications, policy.authorization_policies) == ((), ())
    identity = WorkloadIdentity.of("default", ORDERS)
    assert rbac_filters(identity, policy) == []
    assert mtls_mode("default", ORDERS, 50051, policy) == "DISABLE"  # plaintext, as served today
    expected = server_listener("xds.server/127.0.0.1:50051", "127.0.0.1", 50051, identity, Policy())
    assert server_listener("xds.server/127.0.0.1:50051", "127.0.0.1", 50051, identity, policy) == expected
    assert expected.SerializeToString(deterministic=True) == server_listener(
        "xds.server/127.0.0.1:50051", "127.0.0.1", 50051, identity, Policy()).SerializeToString(deterministic=True)


def http_filter_names(listener) -> list[str]:
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    return [f.name for f in hcm.http_filters]


def test_an_authorization_policy_puts_rbac_before_the_router_of_the_servers_it_selects(tmp_path):
    policy = policy_of(tmp_path, authz("deny-all", "{selector: {matchLabels: {app: orders}}, action: DENY, "
                                                   "rules: [{}]}") + authz("allow", "{selector: {matchLabels: "
                                                                            "{app: orders}}, rules: [{}]}"))
    identity = WorkloadIdentity.of("default", ORDERS)
    names = http_filter_names(server_listener("l", "127.0.0.1", 1, identity, policy))
    assert names == [RBAC_FILTER_DENY, RBAC_FILTER, ROUTER_FILTER]
    other = WorkloadIdentity.of("default", {"app": "pricing"})  # not selected: the listener of no policy
    assert server_listener("l", "127.0.0.1", 1, other, policy).SerializeToString(deterministic=True) == \
        server_listener("l", "127.0.0.1", 1, other, Policy()).SerializeToString(deterministic=True)


def transport(listener_or_cluster):
    """(message name, the TLS context) of a filter chain's or cluster's transport socket; None: plaintext."""
    socket = listener_or_cluster.transport_socket
    if not socket.name:
        return None
    assert socket.name == "envoy.transport_sockets.tls"
    context = tls_pb2.DownstreamTlsContext() if socket.typed_config.Is(
        tls_pb2.DownstreamTlsContext.DESCRIPTOR) else tls_pb2.UpstreamTlsContext()
    assert socket.typed_config.Unpack(context)
    return context


def uses_the_default_provider(common) -> None:
    """Own certificate and the root both from the bootstrap's `default` file_watcher instance."""
    assert common.tls_certificate_provider_instance.instance_name == "default"
    assert common.validation_context.ca_certificate_provider_instance.instance_name == "default"


def test_a_strict_port_serves_mtls_requiring_a_client_certificate_and_a_disabled_port_plaintext(tmp_path):
    policy = policy_of(tmp_path, MESH_STRICT + peer("orders", "{selector: {matchLabels: {app: orders}}, "
                                                               "portLevelMtls: {8080: {mode: DISABLE}}}"))
    identity = WorkloadIdentity.of("default", ORDERS)
    strict = transport(server_listener("l", "127.0.0.1", 50051, identity, policy).filter_chains[0])
    assert isinstance(strict, tls_pb2.DownstreamTlsContext) and strict.require_client_certificate.value
    uses_the_default_provider(strict.common_tls_context)
    assert list(strict.common_tls_context.validation_context.match_subject_alt_names) == []  # RBAC decides who
    assert transport(server_listener("l", "127.0.0.1", 8080, identity, policy).filter_chains[0]) is None
    assert server_listener("l", "127.0.0.1", 50051, identity, policy).filter_chains[0].name == "inbound-mtls"


def destination_rule(spec: str) -> str:
    return ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: catalog, namespace: default}\n"
            f"spec: {{host: catalog.default.svc.cluster.local, {spec}}}\n---\n")


CATALOG_SPIFFE = "spiffe://cluster.local/ns/default/sa/catalog"
SUBSETS = "subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}, trafficPolicy: {tls: {mode: DISABLE}}}]"


@pytest.mark.parametrize("spec, cluster_name, sans", [
    ("trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}", "outbound|50051||catalog.default.svc.cluster.local",
     [CATALOG_SPIFFE]),  # the service's own identity (service account = service name)
    ("trafficPolicy: {tls: {mode: ISTIO_MUTUAL, subjectAltNames: [spiffe://cluster.local/ns/default/sa/x]}}",
     "outbound|50051||catalog.default.svc.cluster.local", ["spiffe://cluster.local/ns/default/sa/x"]),  # pinned
    ("trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}, " + SUBSETS, "outbound|50051|v1|catalog.default.svc.cluster.local",
     [CATALOG_SPIFFE]),  # a subset inherits the rule's tls
    ("trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}, " + SUBSETS, "outbound|50051|v2|catalog.default.svc.cluster.local",
     None),  # ... unless it sets its own
    ("trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, portLevelSettings: [{port: {number: 9090}, tls: {mode: DISABLE}}]}",
     "outbound|9090||catalog.default.svc.cluster.local", None),  # port-level over the rule
    ("trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, portLevelSettings: [{port: {number: 9090}, tls: {mode: DISABLE}}]}",
     "outbound|50051||catalog.default.svc.cluster.local", [CATALOG_SPIFFE]),  # only on that port
    ("trafficPolicy: {tls: {mode: DISABLE}}", "outbound|50051||catalog.default.svc.cluster.local", None),
    ("trafficPolicy: {tls: {mode: SIMPLE}}", "outbound|50051||catalog.default.svc.cluster.local", None),  # files: not proxyless
    ("subsets: [{name: v1, labels: {version: v1}}]", "outbound|50051||catalog.default.svc.cluster.local", None),
])
def test_istio_mutual_gives_clients_mtls_verifying_the_servers_spiffe_identity(spec, cluster_name, sans, tmp_path):
    policy = policy_of(tmp_path, destination_rule(spec))
    context = transport(cluster(cluster_name, policy))
    if sans is None:
        assert context is None  # plaintext, as istiod gives proxyless clients without ISTIO_MUTUAL
        return
    assert isinstance(context, tls_pb2.UpstreamTlsContext)
    uses_the_default_provider(context.common_tls_context)
    assert [m.exact for m in context.common_tls_context.validation_context.match_subject_alt_names] == sans


@pytest.mark.parametrize("spec, field", [
    ("trafficPolicy: {tls: {mode: SIMPLE}}", "spec.trafficPolicy.tls.mode"),
    ("trafficPolicy: {portLevelSettings: [{port: {number: 1}, tls: {mode: MUTUAL}}]}",
     "spec.trafficPolicy.portLevelSettings[0].tls.mode"),
])
def test_file_based_client_tls_is_warned_about(spec, field, tmp_path):
    _, rejections, warnings = compile_text(tmp_path, destination_rule(spec))
    assert rejections == {}
    assert [w for w in warnings if w[2] == field and "only from ISTIO_MUTUAL" in w[3]], warnings


# ---- PeerAuthentication: selection, precedence, PERMISSIVE -----------------------------------------

MESH_STRICT = peer("default", "{mtls: {mode: STRICT}}", "istio-system")
MESH_PERMISSIVE = peer("default", "{mtls: {mode: PERMISSIVE}}", "istio-system")
NS_DISABLE = peer("ns", "{mtls: {mode: DISABLE}}")
NS_UNSET = peer("ns", "{mtls: {}}")
NS_STRICT = peer("ns", "{mtls: {mode: STRICT}}")
ORDERS_DISABLE = peer("orders", "{selector: {matchLabels: {app: orders}}, mtls: {mode: DISABLE}}")
ORDERS_PORTS = peer("orders", "{selector: {matchLabels: {app: orders}}, portLevelMtls: "
                              "{8080: {mode: DISABLE}, 9090: {}}}")
ORDERS_STRICT_PORT_UNSET = peer("orders", "{selector: {matchLabels: {app: orders}}, mtls: {mode: STRICT}, "
                                          "portLevelMtls: {9090: {}}}")


@pytest.mark.parametrize("resources, labels, port, istio, proxyless", [
    ("", ORDERS, 50051, "PERMISSIVE", "DISABLE"),  # nothing: PERMISSIVE, gRPC serves plaintext
    ("", {**ORDERS, **MESHED}, 50051, "PERMISSIVE", "STRICT"),  # ... or mTLS to a meshed workload
    (MESH_STRICT, ORDERS, 50051, "STRICT", "STRICT"),
    (MESH_PERMISSIVE, ORDERS, 50051, "PERMISSIVE", "DISABLE"),
    (MESH_PERMISSIVE, {**ORDERS, **MESHED}, 50051, "PERMISSIVE", "STRICT"),
    (MESH_STRICT + NS_DISABLE, ORDERS, 50051, "DISABLE", "DISABLE"),  # namespace over mesh
    (MESH_STRICT + NS_UNSET, ORDERS, 50051, "STRICT", "STRICT"),  # UNSET inherits
    (NS_STRICT + ORDERS_DISABLE, ORDERS, 50051, "DISABLE", "DISABLE"),  # workload over namespace
    (NS_STRICT + ORDERS_DISABLE, {"app": "pricing"}, 50051, "STRICT", "STRICT"),  # ... only where selected
    (NS_STRICT + ORDERS_PORTS, ORDERS, 8080, "DISABLE", "DISABLE"),  # port-level over workload
    (NS_STRICT + ORDERS_PORTS, ORDERS, 9090, "STRICT", "STRICT"),  # port-level UNSET inherits
    (NS_STRICT + ORDERS_PORTS, ORDERS, 50051, "STRICT", "STRICT"),  # other ports: the workload's mode
    (NS_DISABLE + ORDERS_STRICT_PORT_UNSET, ORDERS, 9090, "STRICT", "STRICT"),
    (peer("other", "{mtls: {mode: STRICT}}", "shop"), ORDERS, 50051, "PERMISSIVE", "DISABLE"),  # other namespace
    (MESH_STRICT + peer("orders", "{selector: {matchLabels: {app: orders}}, mtls: {mode: DISABLE}}",
                        "istio-system"), ORDERS, 50051, "STRICT", "STRICT"),  # root selector: nothing
    (NS_STRICT + peer("a", "{selector: {matchLabels: {app: orders}}, mtls: {mode: DISABLE}}")
     + peer("b", "{selector: {matchLabels: {app: orders}}, mtls: {mode: PERMISSIVE}}"),
     ORDERS, 50051, "DISABLE", "DISABLE"),  # two workload policies: the first by name
    (peer("orders", "{selector: {matchLabels: {app: orders, version: v2}}, mtls: {mode: STRICT}}"),
     ORDERS, 50051, "PERMISSIVE", "DISABLE"),  # every selector label must match
])
def test_peer_authentication_selection_and_precedence(resources, labels, port, istio, proxyless, tmp_path):
    policy = policy_of(tmp_path, resources)
    assert istio_mtls_mode("default", labels, port, policy) == istio
    assert mtls_mode("default", labels, port, policy) == proxyless


# ---- AuthorizationPolicy: RBAC shapes ----------------------------------------------------------------


def rbac_of(policy: Policy, labels=ORDERS) -> list[tuple[str, dict]]:
    out = []
    for http_filter in rbac_filters(WorkloadIdentity.of("default", labels), policy):
        rbac = rbac_http_pb2.RBAC()
        assert http_filter.typed_config.Unpack(rbac)
        out.append((http_filter.name, json_format.MessageToDict(rbac)))
    return out


ANY_PRINCIPAL = {"andIds": {"ids": [{"any": True}]}}
ANY_PERMISSION = {"andRules": {"rules": [{"any": True}]}}


def auth(matcher: dict) -> dict:
    return {"authenticated": {"principalName": matcher}}


def principals(*ids: dict) -> dict:
    return {"andIds": {"ids": [{"orIds": {"ids": list(ids)}}]}}


def permissions(*rules: dict) -> dict:
    return {"andRules": {"rules": [{"orRules": {"rules": list(rules)}}]}}


def path(matcher: dict) -> dict:
    return {"urlPath": {"path": matcher}}


@pytest.mark.parametrize("rule, expected", [
    ("{}", {"permissions": [ANY_PERMISSION], "principals": [ANY_PRINCIPAL]}),
    ("{from: [{source: {principals: [cluster.local/ns/default/sa/gateway]}}]}",
     {"permissions": [ANY_PERMISSION],
      "principals": [principals(auth({"exact": "spiffe://cluster.local/ns/default/sa/gateway"}))]}),
    ("{from: [{source: {principals: ['cluster.local/ns/default/*', '*/sa/gateway', '*']}}]}",
     {"permissions": [ANY_PERMISSION],
      "principals": [principals(auth({"prefix": "spiffe://cluster.local/ns/default/"}),
                                auth({"safeRegex": {"regex": "spiffe://.*/sa/gateway"}}),
                                auth({"safeRegex": {"regex": ".+"}}))]}),
    ("{from: [{source: {notPrincipals: [cluster.local/ns/default/sa/gateway]}}]}",
     {"permissions": [ANY_PERMISSION],
      "principals": [{"andIds": {"ids": [{"notId": {"orIds": {"ids": [
          auth({"exact": "spiffe://cluster.local/ns/default/sa/gateway"})]}}}]}}]}),
    ("{from: [{source: {namespaces: [default, 'team-*']}}]}",
     {"permissions": [ANY_PERMISSION],
      "principals": [principals(auth({"safeRegex": {"regex": ".*/ns/default/.*"}}),
                                auth({"safeRegex": {"regex": ".*/ns/team-.*/.*"}}))]}),
    ("{from: [{source: {principals: [cluster.local/ns/default/sa/gateway], namespaces: [default]}}]}",
     {"permissions": [ANY_PERMISSION],
      "principals": [{"andIds": {"ids": [  # principals first, namespaces after (istiod's order)
          {"orIds": {"ids": [auth({"exact": "spiffe://cluster.local/ns/default/sa/gateway"})]}},
          {"orIds": {"ids": [auth({"safeRegex": {"regex": ".*/ns/default/.*"}})]}}]}}]}),
    ("{to: [{operation: {paths: [/shop.orders.v1.Orders/PlaceOrder, '/shop.inventory.v1.Inventory/*', "
     "'*/GetStock']}}]}",
     {"permissions": [permissions(path({"exact": "/shop.orders.v1.Orders/PlaceOrder"}),
                                  path({"prefix": "/shop.inventory.v1.Inventory/"}),
                                  path({"suffix": "/GetStock"}))],
      "principals": [ANY_PRINCIPAL]}),
    ("{to: [{operation: {notPaths: ['/grpc.health.v1.Health/*']}}]}",
     {"permissions": [{"andRules": {"rules": [{"notRule": {"orRules": {"rules": [
         path({"prefix": "/grpc.health.v1.Health/"})]}}}]}}],
      "principals": [ANY_PRINCIPAL]}),
    ("{to: [{operation: {methods: [POST], paths: [/a.B/C], ports: ['50051']}}]}",
     {"permissions": [{"andRules": {"rules": [  # methods, paths, ports (istiod's order)
         {"orRules": {"rules": [{"header": {"name": ":method", "stringMatch": {"exact": "POST"}}}]}},
         {"orRules": {"rules": [path({"exact": "/a.B/C"})]}},
         {"orRules": {"rules": [{"destinationPort": 50051}]}}]}}],
      "principals": [ANY_PRINCIPAL]}),
    ("{from: [{source: {principals: [a]}}, {source: {principals: [b]}}], to: [{operation: {paths: [/x]}}]}",
     {"permissions": [permissions(path({"exact": "/x"}))],
      "principals": [principals(auth({"exact": "spiffe://a"})), principals(auth({"exact": "spiffe://b"}))]}),
    ("{from: [{source: {serviceAccounts: [gateway]}}]}",
     {"permissions": [ANY_PERMISSION],
      "principals": [principals(auth({"safeRegex": {"regex": "spiffe://.+/ns/default/(.+/|)sa/gateway(/.+)?"}}))]}),
    ("{from: [{source: {ipBlocks: [10.0.0.0/8]}}], when: [{key: source.namespace, values: [default]}]}",
     {"permissions": [ANY_PERMISSION],
      "principals": [{"andIds": {"ids": [
          {"orIds": {"ids": [{"directRemoteIp": {"addressPrefix": "10.0.0.0", "prefixLen": 8}}]}},
          {"orIds": {"ids": [auth({"safeRegex": {"regex": ".*/ns/default/.*"}})]}}]}}]}),
])
def test_allow_rules_become_the_rbac_policies_istiod_generates(rule, expected, tmp_path):
    policy = policy_of(tmp_path, authz("orders", f"{{selector: {{matchLabels: {{app: orders}}}}, rules: [{rule}]}}"))
    assert rbac_of(policy) == [(RBAC_FILTER, {"rules": {"policies": {"default-orders-0": expected}}})]


NEVER = {"permissions": [{"notRule": {"any": True}}], "principals": [{"notId": {"any": True}}]}
ALLOW_GATEWAY = authz("allow-gateway",
                      "{rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/gateway]}}]}]}")
DENY_PAY = authz("deny-pay", "{action: DENY, rules: [{to: [{operation: {paths: [/shop.payments.v1.Payments/*]}}]}]}")


def names(policy: Policy, labels=ORDERS) -> list[tuple[str, list[str]]]:
    return [(name, sorted(rbac.get("rules", {}).get("policies", {}))) for name, rbac in rbac_of(policy, labels)]


@pytest.mark.parametrize("resources, labels, expected", [
    ("", ORDERS, []),  # no policy: no filter, every RPC allowed
    (ALLOW_GATEWAY, ORDERS, [(RBAC_FILTER, ["default-allow-gateway-0"])]),
    (DENY_PAY, ORDERS, [(RBAC_FILTER_DENY, ["default-deny-pay-0"])]),
    (ALLOW_GATEWAY + DENY_PAY, ORDERS,  # DENY before ALLOW
     [(RBAC_FILTER_DENY, ["default-deny-pay-0"]), (RBAC_FILTER, ["default-allow-gateway-0"])]),
    (authz("allow-nothing", "{}"), ORDERS, [(RBAC_FILTER, ["default-allow-nothing-0"])]),  # deny all
    (authz("deny-nothing", "{action: DENY}"), ORDERS, []),
    (authz("mesh", "{rules: [{}]}", "istio-system") + ALLOW_GATEWAY, ORDERS,  # root namespace: everywhere
     [(RBAC_FILTER, ["default-allow-gateway-0", "istio-system-mesh-0"])]),
    (authz("elsewhere", "{rules: [{}]}", "shop"), ORDERS, []),  # another namespace's policy
    (authz("pricing", "{selector: {matchLabels: {app: pricing}}, rules: [{}]}"), ORDERS, []),
    (authz("pricing", "{selector: {matchLabels: {app: pricing}}, rules: [{}]}"), {"app": "pricing"},
     [(RBAC_FILTER, ["default-pricing-0"])]),
    (authz("audit", "{action: AUDIT, rules: [{}]}"), ORDERS, []),  # not enforced by proxyless servers
    (authz("custom", "{action: CUSTOM, provider: {name: ext}, rules: [{}]}"), ORDERS, []),
    (authz("gw", "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}], rules: [{}]}"),
     ORDERS, []),  # targetRefs never attach to a workload
    (authz("two", "{rules: [{from: [{source: {principals: [a]}}]}, {to: [{operation: {paths: [/x]}}]}]}"),
     ORDERS, [(RBAC_FILTER, ["default-two-0", "default-two-1"])]),
    # what gRPC can never match fails closed: the ALLOW rule goes (the filter stays: deny all) ...
    (authz("jwt", "{rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}"), ORDERS, [(RBAC_FILTER, [])]),
    # ... the DENY rule stays without it (denies more)
    (authz("jwt", "{action: DENY, rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}"), ORDERS,
     [(RBAC_FILTER_DENY, ["default-jwt-0"])]),
])
def test_istio_evaluation_order_and_selection(resources, labels, expected, tmp_path):
    assert names(policy_of(tmp_path, resources), labels) == expected


def test_an_allow_policy_without_rules_denies_everything_and_a_deny_policy_denies_what_it_names(tmp_path):
    policy = policy_of(tmp_path, authz("allow-nothing", "{}") + DENY_PAY)
    filters = rbac_of(policy)
    assert filters[0] == (RBAC_FILTER_DENY, {"rules": {"action": "DENY", "policies": {"default-deny-pay-0": {
        "permissions": [permissions(path({"prefix": "/shop.payments.v1.Payments/"}))],
        "principals": [ANY_PRINCIPAL]}}}})
    assert filters[1] == (RBAC_FILTER, {"rules": {"policies": {"default-allow-nothing-0": NEVER}}})


def test_a_deny_rule_drops_what_grpc_cannot_match_and_keeps_the_rest(tmp_path):
    policy = policy_of(tmp_path, authz("deny", "{action: DENY, rules: [{from: [{source: {principals: [x], "
                                                "requestPrincipals: ['*']}}], when: [{key: 'request.auth.claims[iss]', "
                                                "values: [y]}]}]}"))
    [(_, rbac)] = rbac_of(policy)
    assert rbac["rules"]["policies"]["default-deny-0"] == {
        "permissions": [ANY_PERMISSION], "principals": [principals(auth({"exact": "spiffe://x"}))]}


# ---- rejections, warnings, last good versions ---------------------------------------------------------


@pytest.mark.parametrize("text, resource, reason", [
    (peer("p", "{portLevelMtls: {8080: {mode: STRICT}}}"), "PeerAuthentication default/p", "needs a workload selector"),
    (peer("p", "{mtls: {mode: SOMETIMES}}"), "PeerAuthentication default/p", "SOMETIMES"),
    (peer("p", "{selector: {matchLabels: {app: x}}, portLevelMtls: {0: {mode: STRICT}}}"),
     "PeerAuthentication default/p", "port 0"),
    (peer("p", "{mtls: {mode: STRICT}}", api="networking.istio.io/v1"), "PeerAuthentication default/p", "apiVersion"),
    (NS_STRICT + peer("second", "{mtls: {mode: DISABLE}}"), "PeerAuthentication default/second",
     "PeerAuthentication default/ns already applies to namespace default"),
    (authz("a", "{rules: [{from: [{source: {}}]}]}"), "AuthorizationPolicy default/a",
     "from[0].source: must not be empty"),
    (authz("a", "{rules: [{to: [{operation: {}}]}]}"), "AuthorizationPolicy default/a", "must not be empty"),
    (authz("a", "{rules: [{to: [{operation: {ports: ['70000']}}]}]}"), "AuthorizationPolicy default/a", "not a port"),
    (authz("a", "{rules: [{from: [{source: {ipBlocks: [10.0.0.300]}}]}]}"), "AuthorizationPolicy default/a",
     "not an IP address"),
    (authz("a", "{rules: [{to: [{operation: {paths: ['/a.B/{*}']}}]}]}"), "AuthorizationPolicy default/a",
     "uri_template"),
    (authz("a", "{rules: [{when: [{key: source.colour, values: [red]}]}]}"), "AuthorizationPolicy default/a",
     "not an attribute Istio knows"),
    (authz("a", "{rules: [{when: [{key: source.ip}]}]}"), "AuthorizationPolicy default/a", "needs values"),
    (authz("a", "{rules: [{when: [{key: 'request.headers[grpc-timeout]', values: [x]}]}]}"),
     "AuthorizationPolicy default/a", "NACKs"),
    (authz("a", "{action: CUSTOM, rules: [{}]}"), "AuthorizationPolicy default/a", "needs a provider"),
    (authz("a", "{rules: [{from: [{source: {principals: ['']}}]}]}"), "AuthorizationPolicy default/a", "empty value"),
    (authz("a", "{rules: [{from: [{source: {users: [x]}}]}]}"), "AuthorizationPolicy default/a", "users"),
])
def test_an_invalid_security_resource_is_rejected_naming_file_resource_and_reason(text, resource, reason, tmp_path):
    _, rejections, _ = compile_text(tmp_path, text)
    [(what, why)] = [(w, r) for w, r in rejections.items() if resource in w]
    assert what == f"{tmp_path / 'security.yaml'}: {resource}"
    assert reason in why


@pytest.mark.parametrize("text, field, why", [
    (MESH_PERMISSIVE, "spec.mtls.mode", "PERMISSIVE is STRICT for workloads labelled"),
    (peer("p", "{selector: {matchLabels: {app: x}}, portLevelMtls: {8080: {mode: PERMISSIVE}}}"),
     "spec.portLevelMtls.8080.mode", "PERMISSIVE"),
    (peer("p", "{selector: {matchLabels: {app: x}}, mtls: {mode: STRICT}}", "istio-system"), "spec.selector",
     "applies to no workload"),
    (authz("a", "{rules: [{from: [{source: {requestPrincipals: ['*']}}]}]}"),
     "spec.rules[0].from[0].source.requestPrincipals", "an ALLOW rule with it is left out"),
    (authz("a", "{rules: [{when: [{key: 'request.auth.claims[iss]', values: [x]}]}]}"), "spec.rules[0].when[0]",
     "request.auth.claims[iss]: proxyless gRPC cannot honour it"),
    (authz("a", "{rules: [{when: [{key: connection.sni, values: [x]}]}]}"), "spec.rules[0].when[0]", "SNI"),
    (authz("a", "{rules: [{to: [{operation: {methods: [GET, POST]}}]}]}"), "spec.rules[0].to[0].operation.methods",
     "always POST: GET never matches"),
    (authz("a", "{action: AUDIT, rules: [{}]}"), "spec.action", "AUDIT policy is not applied"),
    (authz("a", "{targetRefs: [{kind: Service, name: orders}], rules: [{}]}"), "spec.targetRefs",
     "never to a proxyless workload"),
])
def test_what_proxyless_grpc_cannot_honour_is_warned_about(text, field, why, tmp_path):
    _, rejections, warnings = compile_text(tmp_path, text)
    assert rejections == {}
    assert [w for w in warnings if w[2] == field and why in w[3]], warnings


def test_fully_translated_security_resources_warn_about_nothing(tmp_path):
    text = (MESH_STRICT + ORDERS_PORTS + ALLOW_GATEWAY + DENY_PAY
            + authz("all", "{rules: [{from: [{source: {namespaces: [default], notPrincipals: [x], ipBlocks: [1.2.3.4], "
                           "serviceAccounts: [a], trustDomains: [cluster.local]}}], to: [{operation: {hosts: [a], "
                           "methods: [POST], paths: [/a.B/C], ports: ['1']}}], when: [{key: destination.port, "
                           "values: ['1']}, {key: 'request.headers[x-user]', values: [u]}]}]}"))
    policy, rejections, warnings = compile_text(tmp_path, text)
    assert (rejections, warnings) == ({}, [])
    assert len(policy.peer_authentications) == 2 and len(policy.authorization_policies) == 3


@pytest.mark.parametrize("api", ["security.istio.io/v1", "security.istio.io/v1beta1"])
def test_both_security_api_versions_are_read(api, tmp_path):
    policy = policy_of(tmp_path, peer("ns", "{mtls: {mode: STRICT}}", api=api) + authz("a", "{rules: [{}]}", api=api))
    assert mtls_mode("default", ORDERS, 1, policy) == "STRICT" and names(policy) == [(RBAC_FILTER, ["default-a-0"])]


def test_a_rejected_edit_keeps_the_last_good_version_and_the_policy_compares_by_content(tmp_path):
    state = _State()
    good, rejections, _ = compile_text(tmp_path, ALLOW_GATEWAY, state)
    assert rejections == {}
    again, _, _ = compile_text(tmp_path, ALLOW_GATEWAY, state)
    assert again == good  # equal content: the reconciler rebuilds nothing
    bad, rejections, _ = compile_text(tmp_path, authz("allow-gateway", "{rules: [{from: [{source: {}}]}]}"), state)
    assert list(rejections) == [f"{tmp_path / 'security.yaml'}: AuthorizationPolicy default/allow-gateway"]
    assert bad == good  # the last good version keeps serving
    changed, rejections, _ = compile_text(tmp_path, DENY_PAY, state)
    assert rejections == {} and changed != good and names(changed) == [(RBAC_FILTER_DENY, ["default-deny-pay-0"])]
