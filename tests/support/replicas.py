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

from mesh.runner import topology
from mesh.xds import bootstrap
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

    @property
    def admin(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

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
    name = f"{service}-test-{version}-{next(_numbers)}-{port}"
    node = bootstrap.Node(service, name, version, "127.0.0.1", topology.NAMESPACE)
    xds = f"127.0.0.1:{topology.Ports(mesh.offset).xds}"
    bootstrap.write(topology.bootstrap_path(mesh.run_dir, name), bootstrap.bootstrap(node, xds, mesh.run_dir / "certs" / name))
    full_env = {**template.env, "MESH_INSTANCE_ID": name, "MESH_SERVICE_VERSION": version,
                "MESH_PORT": str(port), "MESH_ADMIN_PORT": str(admin_port),
                "GRPC_XDS_BOOTSTRAP": str(topology.bootstrap_path(mesh.run_dir, name)), **(env or {})}
    proc = procs.start(name, template.command, env=full_env, cwd=topology.ROOT)
    replica = Replica(name, service, version, port, admin_port, proc)

    def settled() -> bool:  # passing, or gone (reported below)
        return not proc.alive() or _check_status(mesh.consul, name, mesh.consul_token("read")) == "passing"

    poll_until(settled, timeout, 0.1, f"{name} registered and passing in Consul")
    assert proc.alive(), f"{name} exited with {proc.popen.returncode}:\n{proc.tail()}"
    return replica
