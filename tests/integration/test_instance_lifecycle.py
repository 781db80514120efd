"""One lifecycle, three languages: against the real Consul and control plane, an instance
registers with its metadata, passes its gRPC check, serves health and reflection on its admin
port, and on SIGTERM deregisters and exits 0. A bad configuration exits 2 naming every bad
variable."""

from __future__ import annotations

import subprocess

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mesh.runner.topology import ROOT, command_for
from support.poll import poll_until
from support.ports import free_port
from support.xds import start_control_plane, write_bootstrap

IMPLEMENTATIONS = {
    "python": ("catalog", "shop.catalog.v1.CatalogService"),
    "go": ("inventory", "shop.inventory.v1.InventoryService"),
    "typescript": ("pricing", "shop.pricing.v1.PricingService"),
}


def _env(tmp_path, service, consul_addr, bootstrap, port, admin):
    return {
        "OTEL_SERVICE_NAME": service, "MESH_SERVICE_VERSION": "v7", "MESH_INSTANCE_ID": f"{service}-it",
        "MESH_PORT": str(port), "MESH_ADMIN_PORT": str(admin), "MESH_DATA_DIR": str(tmp_path / "data"),
        "MESH_DRAIN_TIMEOUT": "2", "CONSUL_HTTP_ADDR": consul_addr, "GRPC_XDS_BOOTSTRAP": str(bootstrap),
        "OTEL_TRACES_EXPORTER": "none", "GRPC_VERBOSITY": "ERROR",
    }


@pytest.mark.parametrize("language", IMPLEMENTATIONS)
def test_register_pass_serve_admin_then_sigterm_deregisters_and_exits_0(language, tmp_path, procs, consul_agent):
    service, grpc_service = IMPLEMENTATIONS[language]
    cp = start_control_plane(procs, consul_agent.http_addr)
    bootstrap = write_bootstrap(tmp_path / "bootstrap.json", cp.address, node_id=f"{service}-it", service=service)
    port, admin = free_port(), free_port()
    instance = procs.start(service, list(command_for(service, language)), cwd=ROOT,
                           env=_env(tmp_path, service, consul_agent.http_addr, bootstrap, port, admin))

    def passing():
        _, entries = consul_agent.client.health.service(service, passing=True)
        return next((e["Service"] for e in entries if e["Service"]["ID"] == f"{service}-it"), None)

    registered = poll_until(passing, timeout=30, interval=0.1, message=f"{service} passing in Consul")
    assert registered["Port"] == port and registered["Address"] == "127.0.0.1"
    assert registered["Meta"]["language"] == language and registered["Meta"]["version"] == "v7"
    assert registered["Meta"]["admin_port"] == str(admin)

    with grpc.insecure_channel(f"127.0.0.1:{admin}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(service=grpc_service), timeout=2).status == \
            health_pb2.HealthCheckResponse.SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        listed = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for s in next(listed).list_services_response.service}
        assert {grpc_service, "grpc.health.v1.Health"} <= names
        watch.cancel()

    instance.popen.send_signal(15)
    assert instance.popen.wait(timeout=15) == 0, instance.tail()
    poll_until(lambda: all(e["Service"]["ID"] != f"{service}-it" for e in consul_agent.client.health.service(service)[1]),
               timeout=5, message=f"{service} deregistered")


@pytest.mark.parametrize("language", IMPLEMENTATIONS)
def test_a_bad_configuration_exits_2_naming_every_bad_variable(language, tmp_path):
    service, _ = IMPLEMENTATIONS[language]
    env = {"PATH": "/usr/bin:/bin", "MESH_PORT": "abc", "MESH_DRAIN_TIMEOUT": "0", "MESH_LOG_LEVEL": "loud",
           "GRPC_XDS_BOOTSTRAP": str(tmp_path / "b.json")}
    done = subprocess.run(list(command_for(service, language)), env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stdout + done.stderr
    for name in ("MESH_PORT", "MESH_DRAIN_TIMEOUT", "MESH_LOG_LEVEL"):
        assert name in done.stderr
    assert "invalid configuration" in done.stderr
