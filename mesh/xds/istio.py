"""Istio's VirtualService, DestinationRule, PeerAuthentication and AuthorizationPolicy, read from the
`*.yaml` files of one folder, checked, and turned into the `Policy` that translation takes.

Each document is parsed into the message generated from Istio's own protos
(`third_party/istio-api`) with `json_format.ParseDict`, which rejects an unknown field or a
duration that does not parse and names it. Then what needs more than one resource is checked: a
host must be a service of the governed namespace, a destination's subset must be defined by the
DestinationRule of its host, weights across several destinations must sum to 100, one resource
of a kind per host. PeerAuthentication and AuthorizationPolicy (`security.istio.io/v1`, `v1beta1`)
are checked as Istio's validation checks them (and where gRPC would NACK what istiod sends) and carried
as they are: `mesh.xds.security` selects them per workload and translates them; one namespace-wide
PeerAuthentication per namespace (the first by name: istiod takes the oldest, files have no creation
time).

A rejected resource keeps its last good version serving (a file whose YAML does not parse keeps
every resource it last gave); the rejection is logged once, with the file, the resource
(`Kind namespace/name`) and the reason, and listed in `rejections` (the control plane's health
name `mesh.xds.policy` is NOT_SERVING while any is). A field the proxyless data plane cannot
honour (mirror, corsPolicy, rewrite, ...) or that this control plane does not translate yet is
logged once as a WARN naming the file and the field; the rest of the resource applies.

`IstioDir` watches the folder by polling the files' mtimes and sizes (`POLL_INTERVAL`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import yaml
from google.protobuf import duration_pb2, json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from istio.networking.v1alpha3 import destination_rule_pb2, virtual_service_pb2
from istio.security.v1beta1 import authorization_policy_pb2, peer_authentication_pb2
from istio.type.v1beta1 import selector_pb2

from mesh.xds import traffic
from mesh.xds.bootstrap import DNS_SUFFIX
from mesh.xds.names import ServiceKey

if TYPE_CHECKING:  # protobuf's C (upb) descriptors, as its stubs name them
    from google._upb._message import Descriptor as UpbDescriptor
    from google._upb._message import FieldDescriptor as UpbFieldDescriptor

__all__ = [
    "API_VERSIONS",
    "POLL_INTERVAL",
    "ROOT_NAMESPACE",
    "IstioDir",
    "IstioResource",
    "Policy",
    "ScopedSpec",
    "ServicePolicy",
    "compile_policy",
    "read_file",
    "spec_of",
]

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.2  # seconds between looks at the folder's files
NETWORKING_API_VERSIONS = frozenset({"networking.istio.io/v1", "networking.istio.io/v1beta1",
                                     "networking.istio.io/v1alpha3"})
SECURITY_API_VERSIONS = frozenset({"security.istio.io/v1", "security.istio.io/v1beta1"})
API_VERSIONS = NETWORKING_API_VERSIONS | SECURITY_API_VERSIONS
MODELS: dict[str, type[Message]] = {"VirtualService": virtual_service_pb2.VirtualService,
                                    "DestinationRule": destination_rule_pb2.DestinationRule,
                                    "PeerAuthentication": peer_authentication_pb2.PeerAuthentication,
                                    "AuthorizationPolicy": authorization_policy_pb2.AuthorizationPolicy}
KIND_API_VERSIONS = {"VirtualService": NETWORKING_API_VERSIONS, "DestinationRule": NETWORKING_API_VERSIONS,
                     "PeerAuthentication": SECURITY_API_VERSIONS, "AuthorizationPolicy": SECURITY_API_VERSIONS}
SECURITY_KINDS = ("PeerAuthentication", "AuthorizationPolicy")
ROOT_NAMESPACE = "istio-system"  # Istio's root namespace: its policies without selector are mesh-wide

# What translation honours, as JSON paths with [] for list indices and * for map keys; a set field
# elsewhere is warned about. CANNOT: what proxyless gRPC cannot do at all (istiod drops it too);
# IGNORED: what is sent (as istiod sends it) but gRPC clients do not apply, and why.
_TRAFFIC_POLICY = ("loadBalancer.simple", "loadBalancer.consistentHash.httpHeaderName",
                   "loadBalancer.consistentHash.ringHash.minimumRingSize",
                   "loadBalancer.consistentHash.minimumRingSize", "outlierDetection.consecutive5xxErrors",
                   "outlierDetection.consecutiveGatewayErrors", "outlierDetection.consecutiveErrors",
                   "outlierDetection.interval", "outlierDetection.baseEjectionTime",
                   "outlierDetection.maxEjectionPercent", "connectionPool.http.http2MaxRequests", "tls.mode",
                   "tls.subjectAltNames")
SUPPORTED = {
    "VirtualService": ("hosts", "http[].name", "http[].match[].name", "http[].match[].headers.*.exact",
                       "http[].match[].headers.*.prefix", "http[].match[].headers.*.regex", "http[].match[].uri.exact",
                       "http[].match[].uri.prefix", "http[].match[].uri.regex", "http[].route[].destination.host",
                       "http[].route[].destination.subset", "http[].route[].destination.port.number",
                       "http[].route[].weight", "http[].retries.attempts", "http[].retries.retryOn",
                       "http[].retries.backoff", "http[].timeout",
                       "http[].fault.delay.fixedDelay", "http[].fault.delay.percentage.value", "http[].fault.delay.percent",
                       "http[].fault.abort.grpcStatus", "http[].fault.abort.httpStatus",
                       "http[].fault.abort.percentage.value"),
    "DestinationRule": ("host", "subsets[].name", "subsets[].labels",
                        *(f"trafficPolicy.{path}" for path in _TRAFFIC_POLICY),
                        *(f"subsets[].trafficPolicy.{path}" for path in _TRAFFIC_POLICY),
                        *(f"{level}portLevelSettings[].{path}" for level in ("trafficPolicy.", "subsets[].trafficPolicy.")
                          for path in ("port.number", "tls.mode", "tls.subjectAltNames"))),
    "PeerAuthentication": ("selector.matchLabels", "mtls.mode", "portLevelMtls.*.mode"),
    "AuthorizationPolicy": ("selector.matchLabels", "action",
                            *(f"rules[].from[].source.{field}" for field in (
                                "principals", "notPrincipals", "namespaces", "notNamespaces", "serviceAccounts",
                                "notServiceAccounts", "trustDomains", "notTrustDomains", "ipBlocks", "notIpBlocks",
                                "remoteIpBlocks", "notRemoteIpBlocks")),
                            *(f"rules[].to[].operation.{field}" for field in (
                                "paths", "notPaths", "methods", "notMethods", "ports", "notPorts", "hosts",
                                "notHosts")),
                            "rules[].when[].key", "rules[].when[].values", "rules[].when[].notValues"),
}
# AuthorizationPolicy `when` keys (Istio's attributes) that gRPC's RBAC filter can honour (gRFC A41:
# the peer address, the client certificate's SAN, the local address, gRPC metadata), and those that
# become matchers gRPC can never match (JWT claims and Envoy metadata are "never match", the SNI is
# empty). istiod sends them anyway, so that a DENY rule with one never fires in gRPC and a negated one
# always does; mesh.xds.security fails closed instead, as Istio's builder does with what it cannot
# translate: an ALLOW rule with one is left out (allows less), a DENY rule applies without it (denies
# more). Each is warned about.
WHEN_KEYS = ("source.ip", "remote.ip", "source.namespace", "source.principal", "source.serviceAccount",
             "source.trustDomain", "destination.ip", "destination.port")
WHEN_PREFIX_KEYS = ("request.headers[",)
WHEN_NEVER = ("request.auth.principal", "request.auth.audiences", "request.auth.presenter", "connection.sni")
WHEN_NEVER_PREFIX = ("request.auth.claims[", "experimental.envoy.filters.")
NEVER_MATCHES = ("proxyless gRPC cannot honour it (gRFC A41: no request authentication, Envoy metadata "
                 "or SNI on a gRPC server): an ALLOW rule with it is left out (allows less), a DENY rule "
                 "applies without it (denies more)")
PERMISSIVE_NOTE = ("gRPC cannot serve plaintext and mTLS on one port: PERMISSIVE is STRICT for workloads "
                   "labelled security.istio.io/tlsMode=istio and DISABLE for the others (as istiod's proxyless "
                   "generator)")
IGNORED = {
    "retries.perTryTimeout": "gRPC clients have no per-try timeout (gRFC A44); the call's deadline bounds every attempt",
    "outlierDetection.minHealthPercent": "gRPC's outlier detection has no panic threshold (maxEjectionPercent bounds it)",
    "outlierDetection.splitExternalLocalOriginErrors": "gRPC's outlier detection counts every failed call alike",
    "outlierDetection.consecutiveLocalOriginFailures": "gRPC's outlier detection counts every failed call alike",
    "connectionPool.tcp": "gRPC clients keep one HTTP/2 connection per endpoint and ignore connection limits",
    "connectionPool.http": "gRPC clients apply only http2MaxRequests (circuit breaker max requests)",
}
CANNOT = ("mirror", "mirrors", "mirrorPercentage", "mirrorPercent", "corsPolicy", "rewrite", "redirect",
          "directResponse", "headers", "delegate", "gateways", "tcp", "tls", "exportTo", "match[].sourceLabels",
          "match[].gateways", "match[].queryParams", "match[].withoutHeaders", "match[].method", "match[].authority",
          "match[].scheme", "match[].ignoreUriCase", "match[].port", "match[].sourceNamespace", "workloadSelector")
FILE_TLS_NOTE = ("proxyless gRPC clients get TLS only from ISTIO_MUTUAL (the mesh's certificates, as from "
                 "istiod): SIMPLE and MUTUAL name files no proxyless client reads, so calls stay plaintext")
SUPPORTED_LB = ("ROUND_ROBIN", "LEAST_REQUEST", "UNSPECIFIED")
# grpcio 1.85 NACKs a cluster with lb_policy LEAST_REQUEST ("LB policy is not supported"), and
# istiod's grpcgen sends ROUND_ROBIN for it too (with a warning): so do we.
LEAST_REQUEST_NOTE = "LEAST_REQUEST is served as ROUND_ROBIN (grpcio rejects it; istiod's proxyless generator does the same)"


@dataclasses.dataclass(frozen=True)
class IstioResource:
    """One parsed document: where it came from and its typed spec."""

    kind: str
    namespace: str
    name: str
    file: str
    spec: Message

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True)
class ServicePolicy:
    """What applies to one service: its DestinationRule and VirtualService specs (None: none)."""

    destination_rule: destination_rule_pb2.DestinationRule | None = None
    virtual_service: virtual_service_pb2.VirtualService | None = None


@dataclasses.dataclass(frozen=True)
class ScopedSpec:
    """A namespaced policy (PeerAuthentication, AuthorizationPolicy) that was accepted: where it
    lives decides what it selects (`mesh.xds.security`)."""

    namespace: str
    name: str
    spec: Message


_Spec = TypeVar("_Spec", bound=Message)
_Owner = TypeVar("_Owner", ServiceKey, str)


def spec_of(resource: IstioResource | ScopedSpec, kind: type[_Spec]) -> _Spec:
    """The resource's spec as the message its kind parses to (`parse_document`)."""
    spec = resource.spec
    if not isinstance(spec, kind):
        raise TypeError(f"{resource.name}: a {type(spec).__name__} spec, not {kind.__name__}")
    return spec


@dataclasses.dataclass(frozen=True)
class Policy:
    """What the Istio resources in `istio/` say, per service, and the security policies (in order
    of namespace and name). The default (no resources) means: one route to all passing endpoints of
    a service, round robin, plaintext, every RPC allowed. Frozen and comparable (protobuf messages
    compare by content): the reconciler compares policies."""

    services: tuple[tuple[ServiceKey, ServicePolicy], ...] = ()
    peer_authentications: tuple[ScopedSpec, ...] = ()
    authorization_policies: tuple[ScopedSpec, ...] = ()

    def of(self, service: ServiceKey) -> ServicePolicy:
        for key, policy in self.services:
            if key == service:
                return policy
        return ServicePolicy()


class Rejected(ValueError):
    pass


def host_service(host: str, namespace: str) -> ServiceKey:
    """A resource's host -> the mesh service it names (short names take the resource's namespace)."""
    name = host.removesuffix("." + DNS_SUFFIX).removesuffix(".svc")
    parts = name.split(".")
    if len(parts) == 1:
        parts.append(namespace)
    if len(parts) != 2 or not all(re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", p) for p in parts) or (
            "." in host and not (host.count(".") == 1 or host.endswith(".svc") or host.endswith("." + DNS_SUFFIX))):
        raise Rejected(f"host {host!r} is no mesh service (NAME, NAME.NAMESPACE, NAME.NAMESPACE.svc or its FQDN)")
    return ServiceKey(parts[0], parts[1])


def _json_name(message: Message, field: FieldDescriptor | UpbFieldDescriptor) -> str:
    return field.json_name if field.json_name else field.name


def set_fields(message: Message, generic: str = "", concrete: str = "") -> Iterator[tuple[str, str]]:
    """(generic path, concrete path) of every set leaf: `http[].match[].uri.exact`, `http[0].match[1].uri.exact`."""
    for field, value in message.ListFields():
        name = _json_name(message, field)
        g, c = f"{generic}.{name}" if generic else name, f"{concrete}.{name}" if concrete else name
        message_type: Descriptor | None = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            value_field = message_type.fields_by_name["value"]
            if value_field.message_type is None:
                yield g, c
                continue
            for key, item in value.items():
                yield from set_fields(item, f"{g}.*", f"{c}.{key}")
        elif message_type is not None and field.is_repeated:
            for index, item in enumerate(value):
                yield from set_fields(item, f"{g}[]", f"{c}[{index}]")
        elif message_type is not None and not message_type.full_name.startswith("google.protobuf."):
            yield from set_fields(value, g, c)
        else:
            yield g, c


def unsupported_fields(resource: IstioResource) -> list[tuple[str, str]]:
    """(field path, why) for each set field translation does not honour."""
    found: dict[str, str] = {}
    supported = SUPPORTED[resource.kind]
    for generic, concrete in set_fields(resource.spec):
        if generic in supported or any(generic.startswith(prefix + ".") for prefix in supported):
            continue
        tail = re.sub(r"^http\[\]\.", "", generic)
        cannot = next((c for c in CANNOT if tail == c or tail.startswith(c + ".") or tail.startswith(c + "[")), None)
        if cannot is not None:  # name the field itself (`mirror`), not each of its leaves (`mirror.host`)
            depth = len(generic.split(".")) - len(tail.split(".")) + len(cannot.split("."))
            concrete = ".".join(concrete.split(".")[:depth])
        ignored = next((why for path, why in IGNORED.items() if re.search(rf"(^|\.|\]){re.escape(path)}(\.|$)", generic)),
                       None)
        why = "proxyless gRPC cannot honour it" if cannot else ignored or "not translated yet"
        found.setdefault(f"spec.{concrete}", why)
    out = list(found.items())
    if resource.kind in SECURITY_KINDS:
        out = [(field, why) for field, why in out if not re.search(
            r"^spec\.(targetRef|provider)|\.(notR|r)equestPrincipals$", field)]
        out += _security_notes(resource)
    if resource.kind == "VirtualService":
        for i, http in enumerate(spec_of(resource, virtual_service_pb2.VirtualService).http):
            if http.retries.attempts + 1 > traffic.MAX_ATTEMPTS:
                out.append((f"spec.http[{i}].retries.attempts",
                            f"gRPC makes at most {traffic.MAX_ATTEMPTS} attempts: {http.retries.attempts} retries "
                            f"become {traffic.MAX_ATTEMPTS - 1}"))
            not_retried = [c for c in _retry_conditions(http.retries.retry_on)
                           if not c.isdigit() and c not in traffic.GRPC_RETRY_ON]
            if not_retried:
                out.append((f"spec.http[{i}].retries.retryOn", f"gRPC retries only on gRPC codes "
                            f"({', '.join(traffic.GRPC_RETRY_ON)}): {', '.join(not_retried)} ignored"))
    if resource.kind == "DestinationRule":
        rule = spec_of(resource, destination_rule_pb2.DestinationRule)
        policies = [("spec.trafficPolicy", rule.traffic_policy)] + [
            (f"spec.subsets[{i}].trafficPolicy", s.traffic_policy) for i, s in enumerate(rule.subsets)]
        for where, policy in policies:
            if policy.load_balancer.simple == destination_rule_pb2.LoadBalancerSettings.LEAST_REQUEST:
                out.append((f"{where}.loadBalancer.simple", LEAST_REQUEST_NOTE))
            for tls_where, tls in [(f"{where}.tls", policy.tls)] + [
                    (f"{where}.portLevelSettings[{i}].tls", p.tls) for i, p in enumerate(policy.port_level_settings)]:
                if tls.mode in (destination_rule_pb2.ClientTLSSettings.SIMPLE, destination_rule_pb2.ClientTLSSettings.MUTUAL):
                    out.append((f"{tls_where}.mode", FILE_TLS_NOTE))
    return out


def when_key_kind(key: str) -> str | None:
    """What an AuthorizationPolicy `when` key is to gRPC: "honoured", "never" (gRPC cannot match
    it) or None (no attribute Istio knows)."""
    if key in WHEN_KEYS or (key.startswith(WHEN_PREFIX_KEYS) and key.endswith("]")):
        return "honoured"
    if key in WHEN_NEVER or key.startswith(WHEN_NEVER_PREFIX):
        return "never"
    return None


def _security_notes(resource: IstioResource) -> list[tuple[str, str]]:
    """What an accepted PeerAuthentication or AuthorizationPolicy does not do on proxyless gRPC."""
    out: list[tuple[str, str]] = []
    if resource.kind == "PeerAuthentication":
        peer = spec_of(resource, peer_authentication_pb2.PeerAuthentication)
        if peer.selector.match_labels and resource.namespace == ROOT_NAMESPACE:
            out.append(("spec.selector", f"a PeerAuthentication with a selector in the root namespace "
                        f"{ROOT_NAMESPACE} applies to no workload (as in istiod)"))
        permissive = peer_authentication_pb2.PeerAuthentication.MutualTLS.PERMISSIVE
        if peer.mtls.mode == permissive:
            out.append(("spec.mtls.mode", PERMISSIVE_NOTE))
        out += [(f"spec.portLevelMtls.{port}.mode", PERMISSIVE_NOTE)
                for port, mtls in sorted(peer.port_level_mtls.items()) if mtls.mode == permissive]
        return out
    spec = spec_of(resource, authorization_policy_pb2.AuthorizationPolicy)
    action = authorization_policy_pb2.AuthorizationPolicy.Action
    if spec.targetRef.ListFields() or len(spec.targetRefs):
        out.append(("spec.targetRefs" if len(spec.targetRefs) else "spec.targetRef",
                    "a policy with targetRefs attaches to gateways and waypoints, never to a proxyless "
                    "workload: it is not applied (as in istiod)"))
    if spec.action in (action.AUDIT, action.CUSTOM):
        out.append(("spec.action", f"proxyless gRPC servers enforce ALLOW and DENY only: this "
                    f"{action.Name(spec.action)} policy is not applied (as in istiod)"))
    for i, rule in enumerate(spec.rules):
        for j, source in enumerate(getattr(rule, "from")):
            for field in ("requestPrincipals", "notRequestPrincipals"):
                if getattr(source.source, "request_principals" if field == "requestPrincipals"
                           else "not_request_principals"):
                    out.append((f"spec.rules[{i}].from[{j}].source.{field}", NEVER_MATCHES))
        for j, to in enumerate(rule.to):
            for field, values in (("methods", to.operation.methods), ("notMethods", to.operation.not_methods)):
                never = [m for m in values if m not in ("POST", "*")]
                if never:
                    out.append((f"spec.rules[{i}].to[{j}].operation.{field}",
                                f"gRPC calls are always POST: {', '.join(never)} never matches"))
        for j, condition in enumerate(rule.when):
            if when_key_kind(condition.key) == "never":
                out.append((f"spec.rules[{i}].when[{j}]", f"{condition.key}: {NEVER_MATCHES}"))
    return out


_GO_DURATION = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)")
_UNIT_NANOS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
               "h": 3_600_000_000_000}


def _proto_duration(text: str) -> str:
    """A duration as Istio writes it (Go's form: `200ms`, `1m30s`, `1h`, `0.5s`) in protobuf's JSON
    form (`0.200s`); raises Rejected naming what does not parse."""
    if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?s", text):
        return text  # already protobuf's form (and Go's)
    sign, body = ("-", text[1:]) if text.startswith("-") else ("", text.lstrip("+"))
    if body == "0":
        return "0s"
    parts = _GO_DURATION.findall(body)
    if not body or "".join(number + unit for number, unit in parts) != body:
        raise Rejected(f"bad Duration {text!r}: write it as Istio does, e.g. 500ms, 2s, 1m30s")
    nanos = round(sum(float(number) * _UNIT_NANOS[unit] for number, unit in parts))
    return f"{sign}{nanos // 1_000_000_000}.{nanos % 1_000_000_000:09d}s"


def _with_proto_durations(value: object, descriptor: Descriptor | UpbDescriptor, where: str) -> object:
    """`value` (a spec as YAML gave it) with every google.protobuf.Duration written in Go's form
    turned into protobuf's JSON form, so that ParseDict reads what Istio reads."""
    if not isinstance(value, dict):
        return value
    fields = {**{f.name: f for f in descriptor.fields}, **{f.json_name: f for f in descriptor.fields}}
    out: dict[object, object] = {}
    for key, item in value.items():
        field = fields.get(key)
        message = field.message_type if field is not None else None
        path = f"{where}.{key}"
        if field is None or message is None:
            out[key] = item
        elif message.full_name == "google.protobuf.Duration" and isinstance(item, str):
            try:
                out[key] = _proto_duration(item)
            except Rejected as error:
                raise Rejected(f"{path}: {error}") from None
        elif message.GetOptions().map_entry and isinstance(item, dict):
            value_type = message.fields_by_name["value"].message_type
            out[key] = {k: _with_proto_durations(v, value_type, f"{path}.{k}") if value_type else v
                        for k, v in item.items()}
        elif field.is_repeated and isinstance(item, list):
            out[key] = [_with_proto_durations(v, message, f"{path}[{i}]") for i, v in enumerate(item)]
        else:
            out[key] = _with_proto_durations(item, message, path)
    return out


def parse_document(document: object, file: str, default_namespace: str) -> IstioResource | None:
    """One YAML document -> an IstioResource; None for a kind this control plane does not read.
    Raises Rejected (with as much of the resource's identity as it has) for anything invalid."""
    if document is None:
        return None
    if not isinstance(document, dict):
        raise Rejected("a document is not a mapping")
    kind, api_version = document.get("kind"), document.get("apiVersion")
    metadata = document.get("metadata") or {}
    if kind not in MODELS:
        return None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
        raise Rejected(f"{kind} without metadata.name")
    resource_ref = f"{kind} {metadata.get('namespace') or default_namespace}/{metadata['name']}"
    if api_version not in KIND_API_VERSIONS[kind]:
        raise Rejected(f"{resource_ref}: apiVersion {api_version!r} is not one of {sorted(KIND_API_VERSIONS[kind])}")
    spec = document.get("spec")
    if not isinstance(spec, dict):
        raise Rejected(f"{resource_ref}: spec is missing or not a mapping")
    try:
        with_durations = cast(dict[str, Any], _with_proto_durations(spec, MODELS[kind].DESCRIPTOR, "spec"))  # a dict stays one
        message = json_format.ParseDict(with_durations, MODELS[kind]())
    except Rejected as error:
        raise Rejected(f"{resource_ref}: {error}") from None
    except json_format.ParseError as error:
        raise Rejected(f"{resource_ref}: " + str(error).replace("\n", " ")) from None
    return IstioResource(kind, metadata.get("namespace") or default_namespace, metadata["name"], file, message)


def read_file(path: Path, default_namespace: str) -> tuple[list[IstioResource], list[tuple[str, str]]]:
    """(resources, rejections as (what, reason)) of one file. Bad YAML rejects the file as a whole:
    ([], [("", reason)])."""
    try:
        documents = list(yaml.safe_load_all(path.read_text()))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        return [], [("", f"not readable YAML: {error}".replace("\n", " "))]
    resources, rejections = [], []
    for index, document in enumerate(documents):
        try:
            resource = parse_document(document, str(path), default_namespace)
        except Rejected as error:
            what, _, reason = str(error).partition(": ")
            rejections.append((what if reason else f"document {index + 1}", reason or str(error)))
            continue
        if resource is not None:
            resources.append(resource)
    return resources, rejections


def _retry_conditions(retry_on: str) -> list[str]:
    return [c.strip() for c in retry_on.split(",") if c.strip()]


def _check_duration(where: str, duration: duration_pb2.Duration) -> None:
    """Istio's rule for every duration it takes: at least 1ms, in whole milliseconds."""
    nanos = duration.seconds * 1_000_000_000 + duration.nanos
    if nanos < 1_000_000 or nanos % 1_000_000:
        raise Rejected(f"{where} {json_format.MessageToJson(duration).strip(chr(34))}: a duration must be at least 1ms, "
                       "in whole milliseconds")


def _check_percentage(where: str, value: float) -> None:
    if not 0 <= value <= 100:
        raise Rejected(f"{where} {value}: a percentage is between 0 and 100")


def _check_route_policy(i: int, http: virtual_service_pb2.HTTPRoute) -> None:
    """Retries, timeout and fault of spec.http[i], as Istio's validation and gRPC need them."""
    where = f"spec.http[{i}]"
    if http.HasField("timeout"):
        _check_duration(f"{where}.timeout", http.timeout)
    if http.HasField("retries"):
        retries = http.retries
        if retries.attempts < 0:
            raise Rejected(f"{where}.retries.attempts {retries.attempts}: must not be negative")
        for condition in _retry_conditions(retries.retry_on):
            if not condition.isdigit() and condition not in traffic.RETRY_CONDITIONS:
                raise Rejected(f"{where}.retries.retryOn {condition!r}: not a retry condition (gRPC codes: "
                               f"{', '.join(traffic.GRPC_RETRY_ON)})")
        for field in ("per_try_timeout", "backoff"):
            if retries.HasField(field):
                _check_duration(f"{where}.retries.{_json_name(retries, retries.DESCRIPTOR.fields_by_name[field])}",
                                getattr(retries, field))
    if http.HasField("fault"):
        fault = http.fault
        if fault.HasField("delay"):
            if not fault.delay.HasField("fixed_delay"):
                raise Rejected(f"{where}.fault.delay: only fixedDelay is supported (as in istiod)")
            _check_duration(f"{where}.fault.delay.fixedDelay", fault.delay.fixed_delay)
            _check_percentage(f"{where}.fault.delay.percentage", fault.delay.percentage.value)
        if fault.HasField("abort"):
            kind = fault.abort.WhichOneof("error_type")
            if kind is None or kind == "http2_error":
                raise Rejected(f"{where}.fault.abort: needs grpcStatus (or httpStatus); gRPC cannot abort with an "
                               "HTTP/2 error")
            if kind == "grpc_status" and fault.abort.grpc_status not in traffic.GRPC_CODES:
                raise Rejected(f"{where}.fault.abort.grpcStatus {fault.abort.grpc_status!r}: not a gRPC status "
                               "code name (UNAVAILABLE, INTERNAL, ...)")
            if kind == "http_status" and not 200 <= fault.abort.http_status <= 599:
                raise Rejected(f"{where}.fault.abort.httpStatus {fault.abort.http_status}: not an HTTP status")
            _check_percentage(f"{where}.fault.abort.percentage", fault.abort.percentage.value)


def _check_traffic_policy(prefix: str, policy: destination_rule_pb2.TrafficPolicy) -> None:
    """Outlier detection and connection pool, as Istio's validation needs them."""
    if policy.HasField("outlier_detection"):
        outlier = policy.outlier_detection
        for field, json in (("interval", "interval"), ("base_ejection_time", "baseEjectionTime")):
            if outlier.HasField(field):
                _check_duration(f"{prefix}.outlierDetection.{json}", getattr(outlier, field))
        _check_percentage(f"{prefix}.outlierDetection.maxEjectionPercent", outlier.max_ejection_percent)
        if outlier.consecutive_errors < 0:
            raise Rejected(f"{prefix}.outlierDetection.consecutiveErrors: must not be negative")
    if policy.connection_pool.http.http2_max_requests < 0:
        raise Rejected(f"{prefix}.connectionPool.http.http2MaxRequests: must not be negative")


def _weights(destinations: Iterable[virtual_service_pb2.HTTPRouteDestination]) -> list[int]:
    return [d.weight for d in destinations]


def _mesh_service(host: str, namespace: str, services: frozenset[ServiceKey] | None) -> ServiceKey:
    service = host_service(host, namespace)
    if services is not None and service not in services:
        raise Rejected(f"host {host!r} is no mesh service: Consul has no service {service.name!r} in namespace "
                       f"{service.namespace!r}")
    return service


def _check_rule(resource: IstioResource, services: frozenset[ServiceKey] | None) -> ServiceKey:
    rule = spec_of(resource, destination_rule_pb2.DestinationRule)
    service = _mesh_service(rule.host, resource.namespace, services)
    names = [subset.name for subset in rule.subsets]
    if len(set(names)) != len(names) or not all(names):
        raise Rejected("subset names must be present and unique")
    for prefix, policy in [("spec.trafficPolicy", rule.traffic_policy)] + [
            (f"spec.subsets[{i}].trafficPolicy", s.traffic_policy) for i, s in enumerate(rule.subsets)]:
        lb = policy.load_balancer
        simple = destination_rule_pb2.LoadBalancerSettings.SimpleLB.Name(lb.simple)
        if lb.HasField("simple") and simple not in SUPPORTED_LB:
            raise Rejected(f"{prefix}.loadBalancer.simple {simple}: gRPC supports ROUND_ROBIN and LEAST_REQUEST "
                           "(and consistentHash)")
        if lb.HasField("consistent_hash") and not lb.consistent_hash.http_header_name:
            raise Rejected(f"{prefix}.loadBalancer.consistentHash: only httpHeaderName is supported")
        _check_traffic_policy(prefix, policy)
    return service


def _check_service(resource: IstioResource, subsets: Callable[[ServiceKey], set[str] | None],
                   services: frozenset[ServiceKey] | None) -> ServiceKey:
    vs = spec_of(resource, virtual_service_pb2.VirtualService)
    if len(vs.hosts) != 1:
        raise Rejected(f"spec.hosts must name exactly one mesh service, not {list(vs.hosts)}")
    service = _mesh_service(vs.hosts[0], resource.namespace, services)
    if not vs.http:
        raise Rejected("spec.http has no route")
    for i, http in enumerate(vs.http):
        if not http.route:
            raise Rejected(f"spec.http[{i}].route is empty")
        _check_route_policy(i, http)
        weights = _weights(http.route)
        if len(http.route) > 1 and sum(weights) != 100:
            raise Rejected(f"spec.http[{i}].route: weights {weights} sum to {sum(weights)}, not 100")
        if len(http.route) == 1 and weights[0] not in (0, 100):
            raise Rejected(f"spec.http[{i}].route[0].weight {weights[0]}: a lone destination takes 100")
        for j, route in enumerate(http.route):
            target = _mesh_service(route.destination.host, resource.namespace, services)
            if target != service and not route.destination.port.number:
                raise Rejected(f"spec.http[{i}].route[{j}].destination: another service needs port.number")
            if route.destination.subset:
                defined = subsets(target)
                if defined is None or route.destination.subset not in defined:
                    raise Rejected(f"spec.http[{i}].route[{j}].destination.subset {route.destination.subset!r}: "
                                   f"no DestinationRule of {target.fqdn} defines it")
        for j, match in enumerate(http.match):
            for where, matcher in [("uri", match.uri)] + [(f"headers.{k}", v) for k, v in match.headers.items()]:
                if matcher.WhichOneof("match_type") == "regex":
                    try:
                        re.compile(matcher.regex)
                    except re.error as error:
                        raise Rejected(f"spec.http[{i}].match[{j}].{where}.regex: {error}") from None
    return service


_LABEL = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")


def _check_selector(selector: selector_pb2.WorkloadSelector) -> None:
    for key, value in selector.match_labels.items():
        if not _LABEL.fullmatch(key) or len(key.rsplit("/", 1)[-1]) > 63:
            raise Rejected(f"spec.selector.matchLabels: {key!r} is not a label name")
        if not _LABEL_VALUE.fullmatch(value) or len(value) > 63:
            raise Rejected(f"spec.selector.matchLabels.{key}: {value!r} is not a label value")


def _check_peer_authentication(resource: IstioResource) -> str:
    """Istio's validation of a PeerAuthentication; returns what it owns: the namespace-wide (or
    mesh-wide) slot when it has no selector (one per namespace), else itself."""
    spec = spec_of(resource, peer_authentication_pb2.PeerAuthentication)
    _check_selector(spec.selector)
    if spec.port_level_mtls and not spec.selector.match_labels:
        raise Rejected("spec.portLevelMtls needs a workload selector (Istio's validation: a namespace-wide or "
                       "mesh-wide policy cannot set port-level mTLS)")
    for port in spec.port_level_mtls:
        if not 0 < port < 65536:
            raise Rejected(f"spec.portLevelMtls: port {port} is not in 1..65535")
    if spec.selector.match_labels:
        return f"{resource.namespace}/{resource.name}"
    if resource.namespace == ROOT_NAMESPACE:
        return f"the mesh (a PeerAuthentication without selector in {ROOT_NAMESPACE})"
    return f"namespace {resource.namespace} (a PeerAuthentication without selector)"


def _check_values(where: str, values: Iterable[str], check: Callable[[str], str | None] | None = None) -> None:
    for index, value in enumerate(values):
        if not value:
            raise Rejected(f"{where}[{index}]: empty value")
        if check is not None:
            problem = check(value)
            if problem:
                raise Rejected(f"{where}[{index}] {value!r}: {problem}")


def _ip_problem(value: str) -> str | None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return "not an IP address or CIDR range"
    return None


def _port_problem(value: str) -> str | None:
    return None if value.isdigit() and int(value) <= 65535 else "not a port (0..65535)"


def _path_problem(value: str) -> str | None:
    if "{*}" in value or "{**}" in value:
        return ("path templates become uri_template matchers, which gRPC's RBAC filter does not take "
                "(it would NACK the listener): use a prefix (/pkg.Service/*)")
    return None


def _header_problem(key: str) -> str | None:
    name = key[len("request.headers["):-1]
    if not name:
        return "names no header"
    if name.lower().startswith("grpc-") or name.lower() == ":scheme":
        return "gRPC's RBAC filter NACKs a matcher on grpc-* headers and :scheme (gRFC A41)"
    return None


def _check_authorization_policy(resource: IstioResource) -> str:
    """Istio's validation of an AuthorizationPolicy, and what gRPC would NACK if istiod sent it."""
    spec = spec_of(resource, authorization_policy_pb2.AuthorizationPolicy)
    action = authorization_policy_pb2.AuthorizationPolicy.Action
    _check_selector(spec.selector)
    if spec.selector.match_labels and (spec.targetRef.ListFields() or len(spec.targetRefs)):
        raise Rejected("spec: selector and targetRefs cannot be set together")
    if spec.action == action.CUSTOM and not spec.provider.name:
        raise Rejected("spec.provider.name: a CUSTOM policy needs a provider")
    if spec.action != action.CUSTOM and spec.HasField("provider"):
        raise Rejected("spec.provider: only a CUSTOM policy has a provider")
    for i, rule in enumerate(spec.rules):
        for j, source in enumerate(getattr(rule, "from")):
            where = f"spec.rules[{i}].from[{j}].source"
            if not source.source.ListFields():
                raise Rejected(f"{where}: must not be empty")
            for field, values in source.source.ListFields():
                check = _ip_problem if field.name.endswith("ip_blocks") else None
                _check_values(f"{where}.{field.json_name}", values, check)
        for j, to in enumerate(rule.to):
            where = f"spec.rules[{i}].to[{j}].operation"
            if not to.operation.ListFields():
                raise Rejected(f"{where}: must not be empty")
            for field, values in to.operation.ListFields():
                check = {"ports": _port_problem, "not_ports": _port_problem, "paths": _path_problem,
                         "not_paths": _path_problem}.get(field.name)
                _check_values(f"{where}.{field.json_name}", values, check)
        for j, condition in enumerate(rule.when):
            where = f"spec.rules[{i}].when[{j}]"
            if not condition.key:
                raise Rejected(f"{where}.key: required")
            if when_key_kind(condition.key) is None:
                raise Rejected(f"{where}.key {condition.key!r}: not an attribute Istio knows")
            if not condition.values and not condition.not_values:
                raise Rejected(f"{where}: needs values or notValues")
            if condition.key.startswith("request.headers["):
                problem = _header_problem(condition.key)
                if problem:
                    raise Rejected(f"{where}.key {condition.key!r}: {problem}")
            check = {"source.ip": _ip_problem, "remote.ip": _ip_problem, "destination.ip": _ip_problem,
                     "destination.port": _port_problem}.get(condition.key)
            _check_values(f"{where}.values", condition.values, check)
            _check_values(f"{where}.notValues", condition.not_values, check)
    return f"{resource.namespace}/{resource.name}"


@dataclasses.dataclass
class _State:
    """What compile_policy keeps between runs: the last good version of every resource."""

    last_good: dict[tuple[str, str, str], IstioResource] = dataclasses.field(default_factory=dict)
    file_resources: dict[str, list[IstioResource]] = dataclasses.field(default_factory=dict)


def compile_policy(files: Iterable[Path], namespace: str, state: _State,
                   services: frozenset[ServiceKey] | None = None,
                   ) -> tuple[Policy, dict[str, str], list[tuple[str, str, str, str]]]:
    """All files -> (policy, rejections {"file: Kind ns/name": reason}, warnings [(file, ref, field, why)]).
    `state` carries last good versions from run to run; `services`, when given, are the mesh
    services a host may name (else any well-formed host of a namespace is taken)."""
    rejections: dict[str, str] = {}
    candidates: list[IstioResource] = []
    seen_files = set()
    for path in sorted(files):
        seen_files.add(str(path))
        resources, problems = read_file(path, namespace)
        for what, reason in problems:
            rejections[f"{path}: {what}" if what else str(path)] = reason
        if problems and any(not what for what, _ in problems):
            resources = state.file_resources.get(str(path), [])  # the YAML is broken: keep what it last gave
        else:
            state.file_resources[str(path)] = resources
        candidates += resources
    for gone in set(state.file_resources) - seen_files:
        del state.file_resources[gone]

    def key(r: IstioResource) -> tuple[str, str, str]:
        return (r.kind, r.namespace, r.name)

    present = {key(r) for r in candidates}
    # a resource rejected at parse time keeps its last good version (when its file still names it)
    for ref_key, good in list(state.last_good.items()):
        if ref_key not in present and any(k.endswith(f"{ref_key[0]} {ref_key[1]}/{ref_key[2]}") for k in rejections):
            candidates.append(good)
            present.add(ref_key)
    accepted: dict[ServiceKey, ServicePolicy] = {}
    rules: dict[ServiceKey, IstioResource] = {}
    owners: dict[tuple[str, ServiceKey | str], str] = {}

    def reject(resource: IstioResource, reason: str) -> IstioResource | None:
        rejections[f"{resource.file}: {resource.ref}"] = reason
        previous = state.last_good.get(key(resource))
        return previous if previous is not None and previous.spec != resource.spec else None

    def admit(resource: IstioResource, check: Callable[[IstioResource], _Owner]) -> tuple[_Owner, IstioResource] | None:
        current: IstioResource | None = resource
        while current is not None:
            try:
                service = check(current)
            except Rejected as error:
                current = reject(resource, str(error)) if current is resource else None
                continue
            owner = owners.setdefault((current.kind, service), current.ref)
            if owner != current.ref:
                reject(resource, f"{owner} already applies to "
                                 f"{service.fqdn if isinstance(service, ServiceKey) else service}")
                return None
            if current is resource:
                state.last_good[key(resource)] = resource
            return service, current
        return None

    for resource in (r for r in candidates if r.kind == "DestinationRule"):
        admitted = admit(resource, lambda r: _check_rule(r, services))
        if admitted:
            rules[admitted[0]] = admitted[1]

    def subsets(service: ServiceKey) -> set[str] | None:
        rule = rules.get(service)
        return None if rule is None else {s.name for s in spec_of(rule, destination_rule_pb2.DestinationRule).subsets}

    routed: dict[ServiceKey, IstioResource] = {}
    for resource in (r for r in candidates if r.kind == "VirtualService"):
        admitted = admit(resource, lambda r: _check_service(r, subsets, services))
        if admitted:
            routed[admitted[0]] = admitted[1]
    security: dict[str, list[IstioResource]] = {kind: [] for kind in SECURITY_KINDS}
    checks = {"PeerAuthentication": _check_peer_authentication, "AuthorizationPolicy": _check_authorization_policy}
    for resource in sorted((r for r in candidates if r.kind in SECURITY_KINDS), key=key):
        owned = admit(resource, checks[resource.kind])
        if owned:
            security[resource.kind].append(owned[1])
    for ref_key in set(state.last_good) - present:
        del state.last_good[ref_key]  # deleted from its file: gone
    warnings = [(r.file, r.ref, field, why)
                for r in list(rules.values()) + list(routed.values()) + [r for rs in security.values() for r in rs]
                for field, why in unsupported_fields(r)]
    for service in set(rules) | set(routed):
        accepted[service] = ServicePolicy(
            spec_of(rules[service], destination_rule_pb2.DestinationRule) if service in rules else None,
            spec_of(routed[service], virtual_service_pb2.VirtualService) if service in routed else None)

    def scoped(kind: str) -> tuple[ScopedSpec, ...]:
        return tuple(ScopedSpec(r.namespace, r.name, r.spec) for r in security[kind])

    return (Policy(tuple(sorted(accepted.items())), scoped("PeerAuthentication"), scoped("AuthorizationPolicy")),
            rejections, warnings)


class IstioDir:
    """Watches `directory` (its `*.yaml`, not sub-folders) and calls `on_policy(policy, rejections)`
    with every newly compiled policy. Logs each rejection and warning once while it lasts. Hosts are
    checked against the mesh's services: nothing is compiled before the first `set_services`, and
    a change of the services compiles again."""

    def __init__(self, directory: Path, namespace: str,
                 on_policy: Callable[[Policy, dict[str, str]], None], poll_interval: float = POLL_INTERVAL) -> None:
        self.directory = directory
        self.namespace = namespace
        self.rejections: dict[str, str] = {}
        self._on_policy = on_policy
        self._poll_interval = poll_interval
        self._state = _State()
        self.warnings: set[tuple[str, str, str, str]] = set()  # (file, resource, field, why), logged once each
        self._snapshot: dict[str, tuple[int, int]] | None = None
        self._services: frozenset[ServiceKey] | None = None
        self._services_known = asyncio.Event()

    def set_services(self, services: Iterable[ServiceKey]) -> None:
        """The mesh's services changed (the first catalog, a service came or went): compile now,
        so that the catalog and the policy it makes valid reach the reconciler together."""
        services = frozenset(services)
        if services == self._services:
            return
        self._services = services
        self._services_known.set()
        self._reload()

    def _reload(self) -> None:
        self._snapshot = self._files()
        policy = self.load()
        self._on_policy(policy, dict(self.rejections))

    def _files(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return out
        for entry in entries:
            if entry.name.endswith(".yaml") and entry.is_file():
                try:
                    stat = entry.stat()
                except FileNotFoundError:
                    continue
                out[entry.path] = (stat.st_mtime_ns, stat.st_size)
        return out

    def load(self) -> Policy:
        policy, rejections, warnings = compile_policy([Path(p) for p in self._files()], self.namespace, self._state,
                                                      self._services)
        for what, reason in rejections.items():
            if self.rejections.get(what) != reason:
                file, _, ref = what.partition(": ")
                log.error("istio resource rejected, its last good version (if any) keeps serving: %s: %s: %s",
                          file, ref or "the whole file", reason, extra={"file": file, "resource": ref, "reason": reason})
        for what in self.rejections.keys() - rejections.keys():
            log.info("istio resource accepted again: %s", what)
        self.rejections = rejections
        current = set(warnings)
        for file, ref, field, why in current - self.warnings:
            log.warning("%s: %s: %s is ignored: %s", file, ref, field, why,
                        extra={"file": file, "resource": ref, "field": field})
        self.warnings = current
        return policy

    async def run(self) -> None:
        await self._services_known.wait()
        while True:
            if self._files() != self._snapshot:
                self._reload()
            await asyncio.sleep(self._poll_interval)
