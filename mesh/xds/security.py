"""PeerAuthentication, AuthorizationPolicy and a DestinationRule's `tls` -> what xDS-managed gRPC
servers and clients get. Pure functions, no I/O. `translate.server_listener` puts `downstream_tls`
on a STRICT port's filter chain and `rbac_filters` before the router; `translate.cluster` puts
`upstream_tls` on a cluster whose DestinationRule says ISTIO_MUTUAL.

Certificates come from the bootstrap's `default` certificate provider (gRPC's file_watcher on the
files the mesh CA writes, `mesh.xds.ca`), as istiod's grpcgen refers to them: the instance's own
certificate and the mesh root both. A server asks every client for a certificate of the mesh CA
(which identity may call what is the RBAC filter's business); a client checks that the server's
certificate names the SPIFFE identity of the service it dialled (Istio's service account: the
service's name), or the DestinationRule's `subjectAltNames` when it pins others. The shape is
the prototype's (FINDINGS.md: `tls_certificate_provider_instance` and the validation context's
`ca_certificate_provider_instance`, which grpcio, grpc-go and grpc-js all read) rather than
istiod's deprecated `*_certificate_provider_instance` fields of the same meaning.

mTLS (`mtls_mode`): the PeerAuthentications that apply to a workload are composed as istiod's
ComposePeerAuthentication composes them: the mesh-wide one (no selector, root namespace
`istio-system`), then the namespace-wide one (no selector, the workload's namespace), then the
first (by namespace and name; istiod: the oldest) whose selector's labels the workload has (a
selector in the root namespace selects nothing), each overriding the one before unless UNSET, and
the workload one's `portLevelMtls` for the port (UNSET there inherits). Nothing set is PERMISSIVE.
gRPC cannot serve plaintext and mTLS on one port, so, as istiod's proxyless generator does:
PERMISSIVE is STRICT for a workload labelled `security.istio.io/tlsMode: istio` (its clients
use mTLS), DISABLE otherwise. `server_mtls` is what a server listener serves: STRICT or DISABLE.

Authorization (`rbac_filters`): the ALLOW and DENY AuthorizationPolicies of the workload's
namespace and of the root namespace whose selector (none: all) the workload's labels satisfy (a
policy with targetRefs never applies to a workload; AUDIT and CUSTOM are not enforced by proxyless
servers) become envoy.extensions.filters.http.rbac.v3.RBAC filters, to go before the router, in
Istio's evaluation order: `envoy.filters.http.rbac.DENY` (action DENY) first, then
`envoy.filters.http.rbac` (action ALLOW). Each rule is one RBAC policy named `NS-NAME-INDEX`, shaped
as istiod's authz model generates it for gRPC (authenticated principals, `spiffe://` prefixed):
permissions and principals are ANDs of ORs, one per `to` and per `from`, `{}` is any.

Where this departs from istiod's grpcgen, it is to keep Istio's documented semantics:
- a workload selected by an ALLOW policy gets the ALLOW filter even when no rule is left (a policy
  without rules: istiod's builder's never-matching policy), so it denies everything not allowed;
  grpcgen sends no filter then, which allows everything;
- what gRPC can never match (request principals, JWT claims, Envoy metadata, SNI: gRFC A41) fails
  closed: an ALLOW rule with it is left out, a DENY rule drops the condition (mesh.xds.istio warns).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_http_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2 as tls_common_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2
from google.protobuf import any_pb2, wrappers_pb2
from istio.networking.v1alpha3 import destination_rule_pb2
from istio.security.v1beta1 import authorization_policy_pb2, peer_authentication_pb2

from mesh.xds.bootstrap import CERT_PROVIDER
from mesh.xds.istio import ROOT_NAMESPACE, Policy, ScopedSpec, spec_of, when_key_kind
from mesh.xds.names import ServiceKey

if TYPE_CHECKING:  # translate imports this module
    from mesh.xds.translate import WorkloadIdentity

__all__ = ["RBAC_FILTER", "RBAC_FILTER_DENY", "TLS_MODE_LABEL", "TLS_TRANSPORT_SOCKET", "authorization_policies",
           "downstream_tls", "istio_mtls_mode", "mtls_mode", "rbac_filters", "rbac_rules", "server_mtls",
           "upstream_tls"]

RBAC_FILTER = "envoy.filters.http.rbac"  # istiod's grpcgen names
RBAC_FILTER_DENY = "envoy.filters.http.rbac.DENY"
TLS_MODE_LABEL = "security.istio.io/tlsMode"
SPIFFE = "spiffe://"
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
_MODE = peer_authentication_pb2.PeerAuthentication.MutualTLS.Mode
_CLIENT_TLS = destination_rule_pb2.ClientTLSSettings.TLSmode
_ACTION = authorization_policy_pb2.AuthorizationPolicy.Action


# ---- mTLS ------------------------------------------------------------------------------------------


def _selects(spec: peer_authentication_pb2.PeerAuthentication | authorization_policy_pb2.AuthorizationPolicy,
             labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in spec.selector.match_labels.items())


def istio_mtls_mode(namespace: str, labels: dict[str, str], port: int, policy: Policy) -> str:
    """The mode Istio's PeerAuthentications give the workload on `port`: STRICT, PERMISSIVE or DISABLE."""
    mesh: peer_authentication_pb2.PeerAuthentication | None = None
    namespace_wide: peer_authentication_pb2.PeerAuthentication | None = None
    workload: peer_authentication_pb2.PeerAuthentication | None = None
    for scoped in policy.peer_authentications:
        peer = spec_of(scoped, peer_authentication_pb2.PeerAuthentication)
        if scoped.namespace not in (namespace, ROOT_NAMESPACE) or not _selects(peer, labels):
            continue
        if not peer.selector.match_labels:
            if scoped.namespace == ROOT_NAMESPACE:
                mesh = mesh or peer
            else:
                namespace_wide = namespace_wide or peer
        elif scoped.namespace != ROOT_NAMESPACE:
            workload = workload or peer
    mode = _MODE.PERMISSIVE
    for spec in (mesh, namespace_wide, workload):
        if spec is not None and spec.mtls.mode != _MODE.UNSET:
            mode = spec.mtls.mode
    if workload is not None and port in workload.port_level_mtls:
        port_mode = workload.port_level_mtls[port].mode
        mode = port_mode if port_mode != _MODE.UNSET else mode
    return _MODE.Name(mode)


def mtls_mode(namespace: str, labels: dict[str, str], port: int, policy: Policy) -> str:
    """What a proxyless gRPC server on `port` serves: STRICT (TLS, client certificate required) or
    DISABLE (plaintext); PERMISSIVE becomes one of them as in istiod's grpcgen."""
    mode = istio_mtls_mode(namespace, labels, port, policy)
    if mode == "PERMISSIVE":
        return "STRICT" if labels.get(TLS_MODE_LABEL) == "istio" else "DISABLE"
    return mode


def server_mtls(identity: WorkloadIdentity, port: int, policy: Policy) -> str:
    """`mtls_mode` for a `translate.WorkloadIdentity`."""
    return mtls_mode(identity.namespace, dict(identity.labels), port, policy)


def _common_tls(sans: Iterable[str] = ()) -> tls_pb2.CommonTlsContext:
    provider = tls_common_pb2.CertificateProviderPluginInstance(instance_name=CERT_PROVIDER)
    validation = tls_common_pb2.CertificateValidationContext(ca_certificate_provider_instance=provider)
    for san in sans:
        validation.match_subject_alt_names.add(exact=san)
    return tls_pb2.CommonTlsContext(tls_certificate_provider_instance=provider, validation_context=validation)


def _transport_socket(context: tls_pb2.DownstreamTlsContext | tls_pb2.UpstreamTlsContext) -> base_pb2.TransportSocket:
    packed = any_pb2.Any()
    packed.Pack(context)
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=packed)


def downstream_tls() -> base_pb2.TransportSocket:
    """A STRICT server's: its own certificate, and a client certificate of the mesh root required."""
    context = tls_pb2.DownstreamTlsContext(common_tls_context=_common_tls(),
                                           require_client_certificate=wrappers_pb2.BoolValue(value=True))
    return _transport_socket(context)


def upstream_tls(service: ServiceKey, tls: destination_rule_pb2.ClientTLSSettings) -> base_pb2.TransportSocket | None:
    """A client's mTLS to `service` when `tls` (a ClientTLSSettings) is ISTIO_MUTUAL: its own
    certificate, and the server's verified against the mesh root and the service's SPIFFE identity
    (or `tls.subjectAltNames`, when set). None (plaintext) for every other mode, as from istiod:
    SIMPLE and MUTUAL name certificate files a proxyless client does not read (mesh.xds.istio warns)."""
    if tls.mode != _CLIENT_TLS.ISTIO_MUTUAL:
        return None
    sans = list(tls.subject_alt_names) or [service.spiffe_id]
    return _transport_socket(tls_pb2.UpstreamTlsContext(common_tls_context=_common_tls(sans)))


# ---- authorization: Istio's attributes -> RBAC matchers ---------------------------------------------


def _quote_meta(text: str) -> str:
    """Go's regexp.QuoteMeta (istiod's regexes escape exactly these; RE2 reads them alike)."""
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$" else c for c in text)


def _string(value: str, prefix: str = "", ignore_case: bool = False) -> string_pb2.StringMatcher:
    """istiod's StringMatcherWithPrefix: `*` any non-empty, `*x` suffix, `x*` prefix, else exact."""
    if value == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))
    if value.startswith("*"):
        if prefix:
            return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(
                regex=prefix + ".*" + _quote_meta(value[1:])))
        return string_pb2.StringMatcher(suffix=value[1:], ignore_case=ignore_case)
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=prefix + value[:-1], ignore_case=ignore_case)
    return string_pb2.StringMatcher(exact=prefix + value, ignore_case=ignore_case)


def _regex(regex: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=regex))


def _header(name: str, value: str, ignore_case: bool = False) -> route_components_pb2.HeaderMatcher:
    """istiod's HeaderMatcher (HostMatcher with ignore_case): `*` present, `*x` suffix, `x*` prefix, exact."""
    if value == "*":
        return route_components_pb2.HeaderMatcher(name=name, present_match=True)
    if value.startswith("*"):
        matcher = string_pb2.StringMatcher(suffix=value[1:], ignore_case=ignore_case)
    elif value.endswith("*"):
        matcher = string_pb2.StringMatcher(prefix=value[:-1], ignore_case=ignore_case)
    else:
        matcher = string_pb2.StringMatcher(exact=value, ignore_case=ignore_case)
    return route_components_pb2.HeaderMatcher(name=name, string_match=matcher)


def _cidr(value: str) -> address_pb2.CidrRange:
    network = ipaddress.ip_network(value, strict=False)
    out = address_pb2.CidrRange(address_prefix=str(network.network_address))
    out.prefix_len.value = network.prefixlen
    return out


def _authenticated(matcher: string_pb2.StringMatcher) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=matcher))


def _service_account_regex(namespace: str, value: str) -> str:
    ns, slash, account = value.partition("/")
    if not slash:
        ns, account = namespace, value
    return f"spiffe://.+/ns/{_quote_meta(ns)}/(.+/|)sa/{_quote_meta(account)}(/.+)?"


def _trust_domain(value: str) -> string_pb2.StringMatcher:
    if value == "*":
        return string_pb2.StringMatcher(prefix=SPIFFE)
    if "*" not in value:
        return string_pb2.StringMatcher(prefix=f"{SPIFFE}{value}/")
    head, _, tail = value.partition("*")
    return _regex(f"spiffe://{_quote_meta(head)}[^/]*{_quote_meta(tail)}/.*")


def _principal(key: str, value: str, namespace: str) -> rbac_pb2.Principal:
    """One value of a principal attribute (source.* and request.headers[...])."""
    if key == "source.principal":
        return _authenticated(_string(value, SPIFFE))
    if key == "source.namespace":
        return _authenticated(_regex(".*/ns/" + ".*".join(_quote_meta(p) for p in value.split("*")) + "/.*"))
    if key == "source.serviceAccount":
        return _authenticated(_regex(_service_account_regex(namespace, value)))
    if key == "source.trustDomain":
        return _authenticated(_trust_domain(value))
    if key == "source.ip":
        return rbac_pb2.Principal(direct_remote_ip=_cidr(value))
    if key == "remote.ip":
        return rbac_pb2.Principal(remote_ip=_cidr(value))
    if key.startswith("request.headers["):
        return rbac_pb2.Principal(header=_header(key[len("request.headers["):-1], value))
    raise ValueError(f"no principal attribute: {key}")


def _permission(key: str, value: str) -> rbac_pb2.Permission:
    """One value of a permission attribute (to.operation.*, destination.*)."""
    if key == "hosts":
        return rbac_pb2.Permission(header=_header(":authority", value, ignore_case=True))
    if key == "methods":
        return rbac_pb2.Permission(header=_header(":method", value))
    if key == "paths":
        return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=_string(value)))
    if key in ("ports", "destination.port"):
        return rbac_pb2.Permission(destination_port=int(value))
    if key == "destination.ip":
        return rbac_pb2.Permission(destination_ip=_cidr(value))
    raise ValueError(f"no permission attribute: {key}")


def _principal_rules(items: Iterable[tuple[str, list[str], list[str]]], namespace: str) -> rbac_pb2.Principal:
    """AND over attributes of (OR of values, NOT OR of notValues); any when empty."""
    ands = []
    for key, values, not_values in items:
        if values:
            ands.append(rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(
                ids=[_principal(key, v, namespace) for v in values])))
        if not_values:
            ands.append(rbac_pb2.Principal(not_id=rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(
                ids=[_principal(key, v, namespace) for v in not_values]))))
    return rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=ands or [rbac_pb2.Principal(any=True)]))


def _permission_rules(items: Iterable[tuple[str, list[str], list[str]]]) -> rbac_pb2.Permission:
    ands = []
    for key, values, not_values in items:
        if values:
            ands.append(rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(
                rules=[_permission(key, v) for v in values])))
        if not_values:
            ands.append(rbac_pb2.Permission(not_rule=rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(
                rules=[_permission(key, v) for v in not_values]))))
    return rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=ands or [rbac_pb2.Permission(any=True)]))


_PRINCIPAL_WHEN = ("source.ip", "remote.ip", "source.namespace", "source.principal", "source.serviceAccount",
                   "source.trustDomain")


def _rule_policy(rule: authorization_policy_pb2.Rule, namespace: str, action: int) -> rbac_pb2.Policy | None:
    """One AuthorizationPolicy rule -> one RBAC policy, in the order istiod's authz model builds it;
    None when an ALLOW rule holds something gRPC can never match (it is left out)."""
    never = [c for c in rule.when if when_key_kind(c.key) == "never"]
    sources = [f.source for f in getattr(rule, "from")]
    if action == _ACTION.ALLOW and (never or any(s.request_principals or s.not_request_principals for s in sources)):
        return None
    when = [(c.key, list(c.values), list(c.not_values)) for c in rule.when if when_key_kind(c.key) != "never"]
    principal_when = [w for w in when if w[0] in _PRINCIPAL_WHEN or w[0].startswith("request.headers[")]
    permission_when = [w for w in when if w not in principal_when]
    principals = []
    for source in sources or [None]:
        items = [] if source is None else [
            ("source.principal", list(source.principals), list(source.not_principals)),
            ("source.serviceAccount", list(source.service_accounts), list(source.not_service_accounts)),
            ("source.trustDomain", list(source.trust_domains), list(source.not_trust_domains)),
            ("source.namespace", list(source.namespaces), list(source.not_namespaces)),
            ("remote.ip", list(source.remote_ip_blocks), list(source.not_remote_ip_blocks)),
            ("source.ip", list(source.ip_blocks), list(source.not_ip_blocks))]
        principals.append(_principal_rules(items + principal_when, namespace))
    permissions = []
    operations: list[authorization_policy_pb2.Operation | None] = [t.operation for t in rule.to]
    for operation in operations or [None]:
        items = [] if operation is None else [
            ("hosts", list(operation.hosts), list(operation.not_hosts)),
            ("methods", list(operation.methods), list(operation.not_methods)),
            ("paths", list(operation.paths), list(operation.not_paths)),
            ("ports", list(operation.ports), list(operation.not_ports))]
        permissions.append(_permission_rules(items + permission_when))
    return rbac_pb2.Policy(permissions=permissions, principals=principals)


_MATCH_NEVER = rbac_pb2.Policy(permissions=[rbac_pb2.Permission(not_rule=rbac_pb2.Permission(any=True))],
                               principals=[rbac_pb2.Principal(not_id=rbac_pb2.Principal(any=True))])


def authorization_policies(namespace: str, labels: dict[str, str],
                           policy: Policy) -> tuple[list[ScopedSpec], list[ScopedSpec]]:
    """(DENY, ALLOW) policies that apply to the workload, as istiod lists them for a sidecar."""
    deny, allow = [], []
    for scoped in policy.authorization_policies:
        spec = spec_of(scoped, authorization_policy_pb2.AuthorizationPolicy)
        if scoped.namespace not in (namespace, ROOT_NAMESPACE) or not _selects(spec, labels):
            continue
        if spec.targetRef.ListFields() or len(spec.targetRefs):
            continue
        if spec.action == _ACTION.DENY:
            deny.append(scoped)
        elif spec.action == _ACTION.ALLOW:
            allow.append(scoped)
    return deny, allow


def rbac_rules(policies: list[ScopedSpec], action: int) -> rbac_pb2.RBAC:
    rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW if action == _ACTION.ALLOW else rbac_pb2.RBAC.DENY)
    for scoped in policies:
        spec = spec_of(scoped, authorization_policy_pb2.AuthorizationPolicy)
        for index, rule in enumerate(spec.rules):
            generated = _rule_policy(rule, scoped.namespace, action)
            if generated is not None:
                rules.policies[f"{scoped.namespace}-{scoped.name}-{index}"].CopyFrom(generated)
        if action == _ACTION.ALLOW and not spec.rules:
            rules.policies[f"{scoped.namespace}-{scoped.name}-0"].CopyFrom(_MATCH_NEVER)
    return rules


def _filter(name: str, rules: rbac_pb2.RBAC) -> hcm_pb2.HttpFilter:
    packed = any_pb2.Any()
    packed.Pack(rbac_http_pb2.RBAC(rules=rules))
    return hcm_pb2.HttpFilter(name=name, typed_config=packed)


def rbac_filters(identity: WorkloadIdentity, policy: Policy) -> list[hcm_pb2.HttpFilter]:
    """The RBAC filters of a workload (a `translate.WorkloadIdentity`), to go before the router:
    DENY (when a DENY rule applies), then ALLOW (when any ALLOW policy selects the workload).
    None at all when no policy selects it: every RPC is allowed, as today."""
    deny, allow = authorization_policies(identity.namespace, dict(identity.labels), policy)
    out = []
    deny_rules = rbac_rules(deny, _ACTION.DENY)
    if deny_rules.policies:
        out.append(_filter(RBAC_FILTER_DENY, deny_rules))
    if allow:
        out.append(_filter(RBAC_FILTER, rbac_rules(allow, _ACTION.ALLOW)))
    return out
