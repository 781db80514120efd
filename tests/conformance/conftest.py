"""The conformance suite's world: a real Consul, the real control plane, a real Jaeger, and probes.

A probe is a small program on one runtime library (tests/conformance/probes/{python,go,ts})
serving polymesh.conformance.v1.ConformanceService. `make test` builds every probe first; a probe
that is not built fails its tests (never skips) and says which target builds it.

    probe = mesh.start_probe("go")            # started, SERVING, registered in Consul
    probe.echo("hi", timeout=2)               # a call through xDS: xds:///SERVICE:PORT
    probe.stop()                               # SIGTERM; returns the exit code
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.xds import bootstrap
from polymesh.conformance.v1 import conformance_pb2, conformance_pb2_grpc
from support.consul import ConsulAgent
from support.jaeger import Jaeger
from support.poll import poll_until
from support.ports import free_ports
from support.procs import Proc, Processes
from support.reports import add_failure_report
from support.xds import ControlPlane, start_control_plane

REPO = Path(__file__).resolve().parents[2]
LANGUAGES = ("python", "go", "typescript")
# How each probe starts, and the make target that builds it.
COMMANDS = {
    "python": ([sys.executable, str(REPO / "tests/conformance/probes/python/probe.py")], "make build"),
    "go": ([str(REPO / ".build/conformance-go")], "make build-go"),
    "typescript": (["node", str(REPO / "tests/conformance/probes/ts/dist/main.js")], "make build-ts"),
}
SERVICE_PORT = 50051  # the port every probe service declares; each instance listens on its own
_names = itertools.count(1)


def command(language: str) -> list[str]:
    args, target = COMMANDS[language]
    program = Path(args[-1])
    assert program.exists(), f"the {language} probe {program} is not built: `{target}` builds it"
    return args


@dataclasses.dataclass
class Probe:
    language: str
    service: str
    instance_id: str
    port: int
    admin_port: int
    proc: Proc
    env: dict[str, str]

    def channel(self) -> grpc.Channel:
        """A plain channel to the business port (the listener is plaintext until mTLS exists)."""
        return grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def admin(self) -> grpc.Channel:
        return grpc.insecure_channel(f"127.0.0.1:{self.admin_port}")

    def health(self, service: str = "") -> str:
        with self.admin() as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def echo(self, message: str = "hello", **kwargs) -> conformance_pb2.EchoResponse:
        request = conformance_pb2.EchoRequest(message=message, failure=kwargs.pop("failure", 0),
                                              relay_to=kwargs.pop("relay_to", ""),
                                              relay_metadata=kwargs.pop("relay_metadata", {}))
        with self.channel() as channel:
            return conformance_pb2_grpc.ConformanceServiceStub(channel).Echo(request, **kwargs)

    def logs(self) -> list[dict]:
        """Its stdout as JSON lines (a line that is not JSON fails here, naming it)."""
        records = []
        for number, line in enumerate(self.proc.log_lines(), 1):
            try:
                records.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"{self.proc.log_path}:{number} is not JSON: {line!r}") from None
        return records

    def stop(self, timeout: float = 15.0) -> int:
        return self.proc.stop(timeout)


@dataclasses.dataclass
class Mesh:
    """One Consul, one control plane, one Jaeger; probes started against them."""

    procs: Processes
    work: Path
    consul: ConsulAgent
    control_plane: ControlPlane
    jaeger: Jaeger

    def probe_env(self, language: str, service: str, instance_id: str, port: int, admin_port: int,
                  consul_http: str | None = None, xds_address: str | None = None,
                  peers: dict[str, int] | None = None) -> dict[str, str]:
        node = bootstrap.Node(service, instance_id, "v1", "127.0.0.1", "default")
        path = self.work / "xds" / f"{instance_id}.json"
        bootstrap.write(path, bootstrap.bootstrap(node, xds_address or self.control_plane.address,
                                                  self.work / "certs" / instance_id))
        return {
            "OTEL_SERVICE_NAME": service, "MESH_INSTANCE_ID": instance_id, "MESH_SERVICE_VERSION": "v1",
            "MESH_HOST": "127.0.0.1", "MESH_PORT": str(port), "MESH_ADMIN_PORT": str(admin_port),
            "MESH_SERVICE_PORTS": ",".join(f"{name}={p}" for name, p in (peers or {}).items()),
            "MESH_DATA_DIR": str(self.work / "data" / instance_id),
            "CONSUL_HTTP_ADDR": consul_http or self.consul.http_addr, "GRPC_XDS_BOOTSTRAP": str(path),
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.jaeger.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
            "MESH_DRAIN_TIMEOUT": "2", "GRPC_VERBOSITY": "ERROR",
        }

    def start_probe(self, language: str, *, service: str | None = None, wait: bool = True,
                    consul: ConsulAgent | None = None, xds_address: str | None = None,
                    peers: dict[str, int] | None = None, extra_env: dict[str, str | None] | None = None) -> Probe:
        """Start a probe of `language`; with `wait`, return once it is SERVING and registered.
        A variable given None in `extra_env` is left out of the probe's environment."""
        number = next(_names)
        service = service or f"probe-{language}-{number}"
        instance_id = f"{service}-{number}"
        port, admin_port = free_ports(2)
        consul = consul or self.consul
        env = {**self.probe_env(language, service, instance_id, port, admin_port, consul.http_addr, xds_address, peers),
               **(extra_env or {})}
        env = {name: value for name, value in env.items() if value is not None}
        proc = self.procs.start(instance_id, command(language), env=env, cwd=REPO)
        probe = Probe(language, service, instance_id, port, admin_port, proc, env)
        if wait:
            self.wait_registered(probe, consul)
        return probe

    def wait_registered(self, probe: Probe, consul: ConsulAgent | None = None, timeout: float = 30.0) -> None:
        consul = consul or self.consul

        def ready() -> bool:
            assert probe.proc.alive(), f"{probe.instance_id} exited with {probe.proc.popen.returncode}"
            return probe.health() == "SERVING" and probe.instance_id in consul.passing(probe.service)

        poll_until(ready, timeout, 0.1, f"{probe.instance_id} SERVING and passing in Consul")


@pytest.fixture(scope="module")
def mesh(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    work = tmp_path_factory.mktemp("conformance")
    procs = Processes(work / "logs")
    add_failure_report(request, procs.report)
    consul = ConsulAgent(work / "consul")
    try:
        consul.start()
        control_plane = start_control_plane(procs, consul.http_addr)
        yield Mesh(procs, work, consul, control_plane, Jaeger(procs))
    finally:
        procs.stop_all()
        consul.stop()


@pytest.fixture
def world(mesh: Mesh, request: pytest.FixtureRequest) -> Iterator[Mesh]:
    """The module's mesh, with the logs of the control plane and of this test's processes under a
    failing test's report; what the test started is stopped when it ends (each probe is a service
    of its own: left running, they would add up in Consul and the control plane)."""
    shared = len(mesh.procs.started)
    add_failure_report(request, lambda: "\n".join(
        f"----- {p.name} (pid {p.pid}) {p.log_path} -----\n{p.tail(40)}"
        for p in [mesh.control_plane.proc, *mesh.procs.started[shared:]]))
    yield mesh
    for proc in reversed(mesh.procs.started[shared:]):
        proc.stop()
    del mesh.procs.started[shared:]


@pytest.fixture(params=LANGUAGES)
def language(request: pytest.FixtureRequest) -> str:
    return request.param


