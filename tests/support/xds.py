"""The control plane as a process (`python -m mesh.xds`) and gRPC xDS bootstrap files.

    cp = start_control_plane(procs, consul_agent.http_addr)     # waits for SERVING on grpc.health.v1
    write_bootstrap(tmp_path / "b.json", cp.address, node_id="orders-1", service="orders")
    cp.logs()                                                   # its JSON log lines, parsed
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.runner import topology
from support.poll import poll_until
from support.ports import free_port
from support.procs import Proc, Processes

__all__ = ["ControlPlane", "start_control_plane", "write_bootstrap"]

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class ControlPlane:
    proc: Proc
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def health(self, service: str = "") -> str:
        """SERVING / NOT_SERVING / ... as its grpc.health.v1 Check says."""
        with grpc.insecure_channel(self.address) as channel:
            request = health_pb2.HealthCheckRequest(service=service)
            response = health_pb2_grpc.HealthStub(channel).Check(request, timeout=1)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_serving(self, timeout: float = 15.0) -> None:
        poll_until(lambda: self.proc.alive() and self.health() == "SERVING", timeout, 0.05, "control plane SERVING")

    def logs(self) -> list[dict]:
        return [json.loads(line) for line in self.proc.log_lines() if line.startswith("{")]


def start_control_plane(procs: Processes, consul_http_addr: str, port: int | None = None, wait: bool = True,
                        name: str = "xds") -> ControlPlane:
    """Start `python -m mesh.xds` on 127.0.0.1 (a free port unless given); MESH_XDS_TEST_DEBUG=1 turns on
    debug logs (every ADS message)."""
    port = port or free_port()
    env = {"MESH_XDS_HOST": "127.0.0.1", "MESH_XDS_PORT": str(port), "CONSUL_HTTP_ADDR": consul_http_addr,
           "MESH_LOG_LEVEL": "debug" if os.environ.get("MESH_XDS_TEST_DEBUG") else "info"}
    cp = ControlPlane(procs.start(name, [sys.executable, "-m", "mesh.xds"], env=env, cwd=REPO), port)
    if wait:
        cp.wait_serving()
    return cp


def write_bootstrap(path: Path, xds_address: str, node_id: str, service: str) -> Path:
    """A gRPC xDS bootstrap as docs/runtime-contract.md describes it (the runner's own)."""
    host, _, port = xds_address.rpartition(":")
    assert host == "127.0.0.1", xds_address
    path.write_text(json.dumps(topology.bootstrap(int(port), node_id, service), indent=2))
    return path
