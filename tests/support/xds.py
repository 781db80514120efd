"""The control plane as a process (`python -m mesh.xds`) and gRPC xDS bootstrap files.

    cp = start_control_plane(procs, consul_agent.http_addr)     # waits for SERVING on grpc.health.v1
    write_bootstrap(tmp_path / "b.json", cp.address, instance_id="orders-1", service="orders")
    cp.logs()                                                   # its JSON log lines, parsed
    cp.client_status()                                          # its CSDS answer: one ClientConfig per node
    cp.certs_dir / "orders-1" / "key.pem"                      # what its mesh CA issued (MESH_RUN_DIR/certs)
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import grpc
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.xds import bootstrap
from support.poll import poll_until
from support.ports import free_port
from support.procs import Proc, Processes

__all__ = ["ControlPlane", "start_control_plane", "write_bootstrap"]

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class ControlPlane:
    proc: Proc
    port: int

    run_dir: Path

    @property
    def ca_dir(self) -> Path:
        return Path(self.proc.env.get("MESH_CA_DIR") or self.run_dir / "ca")

    @property
    def certs_dir(self) -> Path:
        return Path(self.proc.env.get("MESH_CERTS_DIR") or self.run_dir / "certs")

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

    def client_status(self, with_contents: bool = False) -> csds_pb2.ClientStatusResponse:
        """What its CSDS says about every connected node."""
        with grpc.insecure_channel(self.address) as channel:
            request = csds_pb2.ClientStatusRequest(exclude_resource_contents=not with_contents)
            return csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel).FetchClientStatus(request, timeout=2)

    def logs(self) -> list[dict]:
        return [json.loads(line) for line in self.proc.log_lines() if line.startswith("{")]


def start_control_plane(procs: Processes, consul_http_addr: str, port: int | None = None, wait: bool = True,
                        name: str = "xds", env: dict[str, str] | None = None) -> ControlPlane:
    """Start `python -m mesh.xds` on 127.0.0.1 (a free port unless given); MESH_XDS_TEST_DEBUG=1 turns on
    debug logs (every ADS message)."""
    port = port or free_port()
    env = {"MESH_XDS_HOST": "127.0.0.1", "MESH_XDS_PORT": str(port), "CONSUL_HTTP_ADDR": consul_http_addr,
           # its CA and the certificates it issues stay in this test's folder (env may name others)
           "MESH_RUN_DIR": str(procs.log_dir.parent / f"{name}-run"),
           "MESH_LOG_LEVEL": "debug" if os.environ.get("MESH_XDS_TEST_DEBUG") else "info", **(env or {})}
    cp = ControlPlane(procs.start(name, [sys.executable, "-m", "mesh.xds"], env=env, cwd=REPO), port,
                      Path(env["MESH_RUN_DIR"]))
    if wait:
        cp.wait_serving()
    return cp


def write_bootstrap(path: Path, xds_address: str, instance_id: str = "", service: str = "", version: str = "v1",
                    host: str = "127.0.0.1", namespace: str = "default", node_id: str = "") -> Path:
    """The bootstrap `mesh.xds.bootstrap` writes for every instance (docs/runtime-contract.md);
    certificates under the bootstrap's directory (nothing reads them until a policy asks for TLS).
    `node_id` is the old name of `instance_id` (the node id is now derived from it)."""
    instance_id = instance_id or node_id
    assert instance_id and service, "write_bootstrap needs instance_id and service"
    node = bootstrap.Node(service, instance_id, version, host, namespace)
    bootstrap.write(path, bootstrap.bootstrap(node, xds_address, path.parent / "certs" / instance_id))
    return path
