"""`meshctl routes INSTANCE [--json]`: the listeners, routes, clusters and endpoints the instance's
own xDS client holds, from the CSDS its admin port serves (as `istioctl proxy-config`)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import pathlib
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2

# Imported so that json_format knows the types inside the resources' Any fields.
from envoy.extensions.filters.http.fault.v3 import fault_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.protobuf import duration_pb2, json_format
from google.protobuf.message import Message

from mesh.ctl.where import Mesh

__all__ = ["Held", "fetch", "render", "run"]

KINDS = {listener_pb2.Listener: "listeners", route_pb2.RouteConfiguration: "routes",
         cluster_pb2.Cluster: "clusters", endpoint_pb2.ClusterLoadAssignment: "endpoints"}

Held = dict[str, list[tuple[str, str, str, Message]]]  # kind -> [(name, status, version, message)]


def fetch(admin: str) -> Held:
    with grpc.insecure_channel(admin) as channel:
        reply = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel).FetchClientStatus(
            csds_pb2.ClientStatusRequest(), timeout=5)
    return held(reply)


def held(reply: csds_pb2.ClientStatusResponse) -> Held:
    out: Held = {kind: [] for kind in KINDS.values()}
    for config in reply.config:
        for resource in config.generic_xds_configs:
            for message_type, kind in KINDS.items():
                if resource.xds_config.Is(message_type.DESCRIPTOR):
                    message = message_type()
                    resource.xds_config.Unpack(message)
                    status = dump_pb2.ClientResourceStatus.Name(resource.client_status)
                    if status == "NACKED":
                        status += f" ({resource.error_state.details})"
                    out[kind].append((resource.name, status, resource.version_info, message))
    for kind in out:
        out[kind].sort(key=lambda r: r[0])
    return out


def _to_dict(message: Message) -> dict[str, Any]:
    """proto3 JSON of a resource. An `Any` inside may name an extension this process has not imported
    (istiod's retry host predicate, for one): import the generated modules of its package and retry."""
    tried: set[str] = set()
    while True:
        try:
            return json_format.MessageToDict(message)
        except TypeError as error:
            found = re.search(r"type_url: type.googleapis.com/([\w.]+)", str(error))
            package = found.group(1).rsplit(".", 1)[0] if found else ""
            if not package or package in tried:
                raise
            tried.add(package)
            spec = importlib.util.find_spec(package)
            for folder in (spec.submodule_search_locations or []) if spec else []:
                for module in sorted(pathlib.Path(folder).glob("*_pb2.py")):
                    importlib.import_module(f"{package}.{module.stem}")


def as_json(resources: Held) -> dict[str, Any]:
    return {kind: [{"name": name, "status": status, "version": version,
                    "resource": _to_dict(message)} for name, status, version, message in items]
            for kind, items in resources.items()}


def _seconds(d: duration_pb2.Duration) -> str:
    return f"{d.seconds + d.nanos / 1e9:g}s"


def _match(match: route_components_pb2.RouteMatch) -> str:
    path = (f"prefix {match.prefix!r}" if match.HasField("prefix") else f"path {match.path!r}"
            if match.HasField("path") else f"regex {match.safe_regex.regex!r}" if match.HasField("safe_regex") else "any")
    headers = [f"{h.name}={json_format.MessageToDict(h)}" for h in match.headers]
    return path + (f" headers {', '.join(headers)}" if headers else "")


def _route_line(route: route_components_pb2.Route) -> str:
    name = f"[{route.name}] " if route.name else ""
    if route.HasField("route"):
        action = route.route
        if action.HasField("weighted_clusters"):
            to = " | ".join(f"{c.name} {c.weight.value if c.HasField('weight') else ''}".rstrip()
                            for c in action.weighted_clusters.clusters)
        else:
            to = action.cluster or action.cluster_header or "?"
        extras = []
        if action.HasField("timeout"):
            extras.append(f"timeout {_seconds(action.timeout)}")
        if action.HasField("max_stream_duration") and action.max_stream_duration.HasField("grpc_timeout_header_max"):
            extras.append(f"max {_seconds(action.max_stream_duration.grpc_timeout_header_max)}")
        if action.HasField("max_stream_duration") and action.max_stream_duration.HasField("max_stream_duration"):
            extras.append(f"timeout {_seconds(action.max_stream_duration.max_stream_duration)}")
        if action.HasField("retry_policy"):
            retry = action.retry_policy
            extras.append(f"retries {retry.num_retries.value if retry.HasField('num_retries') else 1}"
                          f" on {retry.retry_on or '-'}")
        return f"{name}{_match(route.match)} -> {to}" + (f"  ({', '.join(extras)})" if extras else "")
    if route.HasField("non_forwarding_action"):
        return f"{name}{_match(route.match)} -> (served here)"
    return f"{name}{_match(route.match)} -> {route.WhichOneof('action')}"


def _sans(cluster: cluster_pb2.Cluster) -> list[str]:
    if not cluster.HasField("transport_socket"):
        return []
    tls = tls_pb2.UpstreamTlsContext()
    if not cluster.transport_socket.typed_config.Unpack(tls):
        return []
    common = tls.common_tls_context
    context = (common.combined_validation_context.default_validation_context
               if common.HasField("combined_validation_context") else common.validation_context)
    return [next(iter(json_format.MessageToDict(m).values()), "?") for m in context.match_subject_alt_names]


def _cluster_line(cluster: cluster_pb2.Cluster) -> str:
    parts = [cluster_pb2.Cluster.LbPolicy.Name(cluster.lb_policy)]
    if cluster.HasField("outlier_detection"):
        o = cluster.outlier_detection
        parts.append(f"outlier({', '.join(f'{k}={v}' for k, v in json_format.MessageToDict(o).items())})")
    if cluster.HasField("circuit_breakers"):
        parts.append(f"breakers({json.dumps(json_format.MessageToDict(cluster.circuit_breakers), separators=(',', ':'))})")
    sans = _sans(cluster)
    parts.append(f"mTLS SANs {', '.join(sans)}" if sans else "mTLS" if cluster.HasField("transport_socket") else "plaintext")
    return "  ".join(parts)


def _listener_line(listener: listener_pb2.Listener) -> str:
    if listener.HasField("api_listener"):
        hcm = hcm_pb2.HttpConnectionManager()
        listener.api_listener.api_listener.Unpack(hcm)
        to = f"RDS {hcm.rds.route_config_name}" if hcm.HasField("rds") else "inline routes"
        return f"client  -> {to}"
    address = listener.address.socket_address
    chains = len(listener.filter_chains) + (1 if listener.HasField("default_filter_chain") else 0)
    return f"server  {address.address}:{address.port_value}  {chains} filter chain(s)"


def render(resources: Held) -> str:
    lines = []

    def section(kind: str, title: str, describe: Callable[[Any], Iterable[str]]) -> None:
        items = resources.get(kind, [])
        lines.append(f"{title} ({len(items)})")
        for name, status, version, message in items:
            flag = "" if status == "ACKED" else f"  [{status}]"
            lines.append(f"  {name}  v{version or '-'}{flag}")
            lines.extend(f"    {line}" for line in describe(message))
        lines.append("")

    section("listeners", "LISTENERS", lambda m: [_listener_line(m)])
    section("routes", "ROUTES", lambda m: [line for vh in m.virtual_hosts
                                           for line in [f"{_domains(vh.domains)}:"]
                                           + [f"  {_route_line(r)}" for r in vh.routes]])
    section("clusters", "CLUSTERS", lambda m: [_cluster_line(m)])
    section("endpoints", "ENDPOINTS", _endpoint_lines)
    return "\n".join(lines).rstrip()


def _domains(domains: Sequence[str]) -> str:
    """The longest name (the FQDN) and how many others: the list repeats it with and without port and suffixes."""
    if not domains:
        return "(no domains)"
    longest: str = max(domains, key=len)
    return longest + (f" (+{len(domains) - 1} shorter forms)" if len(domains) > 1 else "")


def _endpoint_lines(assignment: endpoint_pb2.ClusterLoadAssignment) -> Iterable[str]:
    for locality in assignment.endpoints:
        for e in locality.lb_endpoints:
            a = e.endpoint.address.socket_address
            health = f"  {health_check_pb2.HealthStatus.Name(e.health_status)}" if e.health_status else ""
            yield f"{a.address}:{a.port_value}{health}"


def overview(mesh: Mesh) -> int:
    """Without INSTANCE: a line per instance, how many resources of each kind its client holds."""
    from mesh.ctl.render import table
    from mesh.runner import topology
    mesh.require_running()
    rows: list[tuple[str, ...]] = [("INSTANCE", "LISTENERS", "ROUTES", "CLUSTERS", "ENDPOINTS", "NOT ACKED")]
    for service in topology.SERVICES:
        for instance in service.instances:
            try:
                resources = fetch(f"{mesh.host(instance.name)}:{instance.admin_port + mesh.offset}")
            except grpc.RpcError as error:
                rows.append((instance.name, *["-"] * 4, f"admin port: {error.code().name}"))
                continue
            waiting = sum(1 for items in resources.values() for _, status, _, _ in items if status != "ACKED")
            rows.append((instance.name, *(str(len(resources[kind])) for kind in KINDS.values()), str(waiting)))
    print(table(rows) + "\n\n(meshctl routes INSTANCE shows them)")
    return 0


def run(mesh: Mesh, instance: str | None, as_json_flag: bool) -> int:
    if instance is None:
        return overview(mesh)
    try:
        _, found = mesh.instance(instance)
    except LookupError as error:
        print(error)
        return 2
    mesh.require_running()
    admin = f"{mesh.host(instance)}:{found.admin_port + mesh.offset}"
    try:
        resources = fetch(admin)
    except grpc.RpcError as error:
        print(f"{instance}'s admin port {admin} does not answer CSDS ({error.code().name}): is it running? "
              f"`meshctl status` shows it; `make up` starts the mesh")
        return 1
    print(json.dumps(as_json(resources), indent=2) if as_json_flag else render(resources))
    return 0
