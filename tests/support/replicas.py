"""An extra instance of a mesh service, started by a test the way the runner starts that service's
instances (mesh/runner/topology.py: same command, same environment), with its own instance id,
version label, free ports, xDS bootstrap and extra environment (e.g. the runtime's injected
failures). It registers itself in Consul as every instance does; the test stops it by PID.

    replica = start_replica(procs, mesh, "catalog", version="slow", env={"MESH_INJECT_DELAY_MS": "1500"})
    replica.calls()        # its business server's channelz counters
    replica.proc.stop()    # or let the `procs` fixture stop it at teardown (SIGTERM: it deregisters)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import yaml

from mesh.runner import topology
from mesh.xds import bootstrap
from mesh.xds.ca import MeshCA, WorkloadId, write_workload_files
from support.channelz import ServerCalls, server_calls
from support.poll import poll_until
from support.ports import free_ports
from support.procs import Proc, Processes

__all__ = ["Replica", "start_replica"]

_numbers = itertools.count(1)


@dataclasses.dataclass
class Replica:
    name: str  # the instance id
    service: str
    version: str
    port: int
    admin_port: int
    proc: Proc
    host: str = "127.0.0.1"

    @property
    def admin(self) -> str:
        return f"{self.host}:{self.admin_port}"

    def calls(self) -> ServerCalls:
        return server_calls(self.admin, self.port)


def _check_status(consul: str, instance_id: str, token: str) -> str:
    request = urllib.request.Request(f"{consul}/v1/agent/checks", headers={"X-Consul-Token": token})
    with urllib.request.urlopen(request, timeout=2) as reply:
        checks = json.load(reply)
    statuses = [c["Status"] for c in checks.values() if c.get("ServiceID") == instance_id]
    return statuses[0] if len(statuses) == 1 else f"{len(statuses)} checks"


def start_replica(procs: Processes, mesh, service: str, version: str, env: Mapping[str, str] | None = None,
                  timeout: float = 30.0) -> Replica:
    """Start one more instance of `service` and return once Consul says it passes its check."""
    template = next(p for p in topology.build(mesh.run_dir, mesh.offset) if p.service == service)
    port, admin_port = free_ports(2)
    number = next(_numbers)
    name = f"{service}-test-{version}-{number}-{port}"
    istiod = topology.control_plane_from_env() == "istiod"
    host = f"127.0.0.{100 + number}" if istiod else "127.0.0.1"  # under istiod: an address of its own
    node = bootstrap.Node(service, name, version, host, topology.NAMESPACE)
    xds = f"127.0.0.1:{topology.Ports(mesh.offset).xds}"
    bootstrap.write(topology.bootstrap_path(mesh.run_dir, name), bootstrap.bootstrap(node, xds, mesh.run_dir / "certs" / name))
    full_env = {**template.env, "MESH_INSTANCE_ID": name, "MESH_SERVICE_VERSION": version,
                "MESH_PORT": str(port), "MESH_ADMIN_PORT": str(admin_port),
                "GRPC_XDS_BOOTSTRAP": str(topology.bootstrap_path(mesh.run_dir, name)), "MESH_HOST": host, **(env or {})}
    if istiod:
        _register_with_istiod(mesh, service, name, version, host, port)
    proc = procs.start(name, template.command, env=full_env, cwd=topology.ROOT)
    if istiod:
        _unregister_on_stop(proc, topology.registry_dir(mesh.run_dir) / f"{name}.yaml")
    replica = Replica(name, service, version, port, admin_port, proc, host)

    def settled() -> bool:  # passing, or gone (reported below)
        return not proc.alive() or _check_status(mesh.consul, name, mesh.consul_token("read")) == "passing"

    poll_until(settled, timeout, 0.1, f"{name} registered and passing in Consul")
    assert proc.alive(), f"{name} exited with {proc.popen.returncode}:\n{proc.tail()}"
    return replica


def _register_with_istiod(mesh, service: str, name: str, version: str, host: str, port: int) -> None:
    """What istiod needs of an instance the runner did not start: its certificate files (no ADS-time
    issuance there: the runner's certs process issues for the topology only) and a WorkloadEntry in
    the registry folder istiod watches."""
    ca = MeshCA.load(mesh.run_dir / "ca")
    write_workload_files(mesh.run_dir / "certs" / name, ca.issue(WorkloadId(topology.NAMESPACE, service), 3600), ca.root_pem)
    entry = {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
             "metadata": {"name": name, "namespace": topology.NAMESPACE},
             "spec": {"address": host, "serviceAccount": service, "labels": {"app": service, "version": version},
                      "ports": {f"grpc-{service}": port}}}
    folder = topology.registry_dir(mesh.run_dir)
    temp = folder / f".{name}.tmp"
    temp.write_text(yaml.safe_dump(entry, sort_keys=False))
    temp.replace(folder / f"{name}.yaml")
    # A node that connects before istiod has the entry gets no inbound listener, and grpcio does not
    # ask again: wait until istiod's endpoint index holds the address.
    shards = f"http://127.0.0.1:{topology.Ports(mesh.offset).istiod_http}/debug/endpointShardz"
    poll_until(lambda: host in urllib.request.urlopen(shards, timeout=2).read().decode(), 10, 0.1,
               f"{name}'s WorkloadEntry in istiod's endpoints")


def _unregister_on_stop(proc: Proc, entry: Path) -> None:
    stop = proc.stop

    def stop_and_unregister(*args, **kwargs) -> int:
        try:
            return stop(*args, **kwargs)
        finally:
            entry.unlink(missing_ok=True)

    proc.stop = stop_and_unregister  # type: ignore[method-assign]
