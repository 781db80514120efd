"""`meshctl status`: every instance as Consul sees it (health, version, language) with its uptime,
restarts and certificate expiry; what every xDS client last ACKed or NACKed (the control plane's
CSDS, as `istioctl proxy-status`); the control plane's policy errors."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import urllib.request
from pathlib import Path

import grpc
from cryptography import x509
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.protobuf import json_format

from mesh.ctl.render import XDS_TYPES, duration, table, xds_cell
from mesh.ctl.where import Mesh
from mesh.runner import probes
from mesh.xds.bootstrap import NodeIdentity

__all__ = ["NodeXds", "fetch_istiod_sync", "fetch_xds", "run"]


@dataclasses.dataclass(frozen=True)
class NodeXds:
    instance: str
    cells: dict[str, str]  # LDS/RDS/CDS/EDS -> cell
    nacks: list[str]  # "CDS outbound|...: version 7 rejected: reason"


def instance_of(config: csds_pb2.ClientConfig) -> str:
    metadata = json_format.MessageToDict(config.node.metadata) if config.node.HasField("metadata") else {}
    return NodeIdentity.parse(config.node.id, config.node.cluster, metadata).instance


def summarize(configs: list[csds_pb2.ClientConfig]) -> NodeXds:
    """One instance's ADS streams (a process may hold several: one per channel) in one row."""
    by_type: dict[str, list[tuple[str, str, str]]] = {column: [] for column in XDS_TYPES.values()}
    nacks = []
    for resource in (r for config in configs for r in config.generic_xds_configs):
        column = XDS_TYPES.get(resource.type_url.rsplit("/", 1)[-1])
        if column is None:
            continue
        client = dump_pb2.ClientResourceStatus.Name(resource.client_status)
        by_type[column].append((client, csds_pb2.ConfigStatus.Name(resource.config_status), resource.version_info))
        if client == "NACKED":
            nacks.append(f"{column} {resource.name}: version {resource.error_state.version_info} rejected: "
                         f"{resource.error_state.details}")
        elif resource.error_state.details:
            nacks.append(f"{column} {resource.name}: {resource.error_state.details}")
    return NodeXds(instance_of(configs[0]), {column: xds_cell(states) for column, states in by_type.items()}, nacks)


def fetch_xds(address: str) -> list[NodeXds]:
    with grpc.insecure_channel(address) as channel:
        reply = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel).FetchClientStatus(
            csds_pb2.ClientStatusRequest(exclude_resource_contents=True), timeout=5)
    streams: dict[str, list[csds_pb2.ClientConfig]] = {}
    for config in reply.config:
        streams.setdefault(instance_of(config), []).append(config)
    return [summarize(streams[name]) for name in sorted(streams)]


def fetch_istiod_sync(mesh: Mesh) -> list[NodeXds]:
    """Under istiod: its `/debug/syncz` (what `istioctl proxy-status` reads): per proxy and type, the
    nonce last sent and the one last ACKed. SYNCED when they match, STALE when the ACK is behind
    (istiod keeps no NACK reason there: its log has it)."""
    with urllib.request.urlopen(f"{mesh.istiod_debug}/debug/syncz", timeout=5) as reply:
        entries = json.load(reply)
    states: dict[str, dict[str, set[str]]] = {}  # instance -> column -> states of its streams (one per channel)
    for entry in entries:
        resources = entry.get("resources") or {}
        columns = states.setdefault(str(entry.get("proxy", "?")).rsplit(".", 1)[0], {})
        for suffix, column in XDS_TYPES.items():
            sent = resources.get(f"type.googleapis.com/{suffix}", {})
            if sent.get("sent"):
                columns.setdefault(column, set()).add("SYNCED" if sent.get("acked") == sent["sent"] else "STALE")
    return [NodeXds(name, {column: "STALE" if "STALE" in columns.get(column, ()) else
                           "SYNCED" if column in columns else "-" for column in XDS_TYPES.values()}, [])
            for name, columns in sorted(states.items())]


def _uptime(pid: int | None) -> str:
    """From /proc: the process's start time in clock ticks after boot."""
    if not pid:
        return "-"
    try:
        started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        since_boot = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return "-"
    return duration(since_boot - started)


def cert_expiry(mesh: Mesh, instance: str, now: float | None = None) -> str:
    path = mesh.run_dir / "certs" / instance / "cert-chain.pem"
    try:
        cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return "-"
    left = cert.not_valid_after_utc.timestamp() - (time.time() if now is None else now)
    return duration(left)


def run(mesh: Mesh) -> int:
    mesh.require_running()
    services = mesh.consul_get("/v1/agent/services")
    checks = probes.consul_checks(mesh.consul, _token(mesh))
    mesh.require_control_plane()
    processes = {p["name"]: p for p in mesh.state().get("processes", [])}
    rows = [("INSTANCE", "SERVICE", "LANGUAGE", "VERSION", "ADDRESS", "UPTIME", "RESTARTS", "CERT EXPIRES", "HEALTH")]
    healthy = True
    assert isinstance(services, dict)
    for sid, service in sorted(services.items()):
        meta = service.get("Meta") or {}
        process = processes.get(sid, {})
        health = checks.get(sid, "unknown")
        healthy &= health == "passing"
        rows.append((sid, service.get("Service", "-"), meta.get("language", "-"), meta.get("version", "-"),
                     f"{service.get('Address')}:{service.get('Port')}", _uptime(process.get("pid")),
                     str(process.get("restarts", "-")), cert_expiry(mesh, sid), health))
    for name in ("consul", "jaeger", "control-plane"):
        if name in processes:
            p = processes[name]
            rows.append((name, "-", "-", "-", f"127.0.0.1:{p['port']}", _uptime(p.get("pid")), str(p["restarts"]),
                         "-", "running" if p.get("pid") else "down"))
    print(table(rows))
    istiod = mesh.control_plane == "istiod"
    nodes = fetch_istiod_sync(mesh) if istiod else fetch_xds(mesh.xds)
    source = f"/debug/syncz of istiod at {mesh.istiod_debug}" if istiod else f"CSDS of the control plane at {mesh.xds}"
    print(f"\nxDS clients ({source}):")
    connected = {n.instance for n in nodes}
    absent = [(sid, *(["not connected"] + ["-"] * (len(XDS_TYPES) - 1))) for sid in sorted(services) if sid not in connected]
    print(table([("NODE", *XDS_TYPES.values())] + [(n.instance, *n.cells.values()) for n in nodes] + absent))
    problems = [f"  {n.instance}: {line}" for n in nodes for line in n.nacks]
    if problems:
        print("\n" + "\n".join(problems))
    synced = all(cell.startswith(("SYNCED", "-")) for n in nodes for cell in n.cells.values())
    if istiod:
        log = mesh.run_dir / "logs" / "control-plane.log"
        print(f"\ncontrol plane: istiod (it reports a file it cannot read only in its log, {log}; "
              "`istioctl analyze` checks istio/)")
        return 0 if healthy and synced else 3
    errors, warnings = probes.control_plane_problems(mesh.xds)
    if errors or warnings:
        print("\ncontrol plane:")
        print("\n".join(f"  {line}" for line in errors + warnings))
    else:
        print("\ncontrol plane: no policy errors")
    return 0 if healthy and synced and not errors else 3


def _token(mesh: Mesh) -> str:
    from mesh.runner import consul_acl
    try:
        return consul_acl.read_token(mesh.run_dir, consul_acl.READ)
    except OSError:
        return ""


