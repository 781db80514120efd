"""What `make up` runs, in start order, with every port derived from one offset so that a test
mesh (MESH_PORT_OFFSET) can run beside a developer's."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable
from typing import Any

from mesh.runner import consul_acl
from mesh.xds import bootstrap

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "bin"
BUILD = ROOT / ".build"
PYTHON = ROOT / ".venv" / "bin" / "python"


@dataclasses.dataclass(frozen=True)
class Process:
    name: str  # unique: the instance id for mesh instances
    wave: int  # waves start in order; a wave starts once the previous one is ready
    command: tuple[str, ...]
    env: dict[str, str]
    ready: tuple[str, str]  # (probe kind, target): ("http", url) | ("grpc", host:port) | ("consul", instance id)
    service: str = ""  # empty for infrastructure
    language: str = ""
    version: str = ""
    port: int = 0
    admin_port: int = 0
    host: str = "127.0.0.1"  # the address its ports bind (istiod mode: one loopback address per instance)


@dataclasses.dataclass(frozen=True)
class Ports:
    offset: int = 0

    def __getattr__(self, name: str) -> int:
        return BASE_PORTS[name] + self.offset


BASE_PORTS = {
    "consul_http": 8500, "consul_grpc": 8502, "consul_grpc_tls": 8503, "consul_server": 8300,
    "consul_serf_lan": 8301, "consul_serf_wan": 8302,
    "otlp_grpc": 4317, "otlp_http": 4318, "jaeger_query": 16686, "jaeger_query_grpc": 16685,
    "jaeger_health": 13133, "xds": 18000, "gateway": 8080,
    "istiod_http": 18016,  # istiod-local's /ready and /debug (MESH_CONTROL_PLANE=istiod); its xDS is on "xds"
}
CONTROL_PLANES = ("ours", "istiod")

NAMESPACE = "default"
CONSUL_NODE = "polymesh"
# The gateway's own variables a developer may set for `make up` (services/gateway/app.py).
GATEWAY_PASSTHROUGH = ("GATEWAY_RATE_LIMIT_RPS", "GATEWAY_RATE_LIMIT_BURST")


@dataclasses.dataclass(frozen=True)
class Instance:
    name: str  # the instance id
    version: str
    port: int  # where this instance listens
    admin_port: int
    env: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Service:
    name: str
    language: str
    port: int  # the service port: what clients dial (xds:///NAME:PORT) and a ServiceEntry declares
    instances: tuple[Instance, ...]
    protocol: str = "grpc"


# The one list of what the mesh runs. Ports are bases: MESH_PORT_OFFSET is added to each.
SERVICES = (
    Service("catalog", "python", 50051, (
        Instance("catalog-v1", "v1", 50051, 19051),
        Instance("catalog-v2", "v2", 50052, 19052),  # the same code: a canary target for pricing and inventory
    )),
    Service("payments", "python", 50081, (Instance("payments", "v1", 50081, 19081),)),
    Service("pricing", "typescript", 50061, (
        Instance("pricing-v1", "v1", 50061, 19061, {"PRICING_PROMOTION_PERCENT": "0"}),
        Instance("pricing-v2", "v2", 50062, 19062, {"PRICING_PROMOTION_PERCENT": "10"}),
    )),
    Service("inventory", "go", 50071, (
        Instance("inventory-1", "v1", 50071, 19071),
        Instance("inventory-2", "v1", 50072, 19072),
    )),
    Service("orders", "python", 50091, (Instance("orders", "v1", 50091, 19091),)),
    Service("gateway", "python", 8080, (Instance("gateway", "v1", 8080, 19080),), protocol="http"),
    # `meshctl new service` adds its services above this line (mesh/ctl/scaffold.py)
)


def service_ports(offset: int = 0) -> str:
    """MESH_SERVICE_PORTS: every gRPC service's port, as every instance and the control plane read it."""
    return ",".join(f"{s.name}={s.port + offset}" for s in SERVICES if s.protocol == "grpc")


def command_for(service: str, language: str) -> tuple[str, ...]:
    if language == "python":
        return (str(PYTHON), "-m", f"services.{service}")
    if language == "go":
        return (str(BUILD / service),)
    return ("node", str(ROOT / "services" / service / "dist" / "main.js"))


def bootstrap_path(run_dir: pathlib.Path, instance: str) -> pathlib.Path:
    return run_dir / "xds" / f"{instance}.json"


def auth_dir(run_dir: pathlib.Path) -> pathlib.Path:
    """The development issuer's signing key (0600) and its public JWKS (mesh/auth/tokens.py)."""
    return run_dir / "auth"


def _own_env(service: str, run_dir: pathlib.Path) -> dict[str, str]:
    return {"GATEWAY_JWKS_FILE": str(auth_dir(run_dir) / "jwks.json")} if service == "gateway" else {}


def _passed_on(service: str) -> dict[str, str]:
    """What a developer set for `make up` (local processes only: docker-compose.yml stays as generated)."""
    if service != "gateway":
        return {}
    return {name: os.environ[name] for name in GATEWAY_PASSTHROUGH if os.environ.get(name)}


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the mesh's pieces are, as its processes see them: the one thing that differs between
    local processes (`local`: everything on 127.0.0.1, ports shifted by the offset, the run folder
    on the host) and containers (`mesh.runner.compose`: an address per container, the run folder
    a volume). Every environment variable and bootstrap below is derived from a placement, so
    both forms of the mesh tell each process the same things."""

    run_dir: pathlib.Path
    offset: int
    consul: str  # host:port of Consul's HTTP API
    xds: str  # host:port of the control plane
    otlp: str  # OTLP/gRPC URL (Jaeger)
    istio_dir: pathlib.Path
    hosts: Callable[[str], str]  # instance (or "control-plane") -> the address it binds and advertises

    @classmethod
    def local(cls, run_dir: pathlib.Path, offset: int = 0) -> Placement:
        p = Ports(offset)
        return cls(run_dir, offset, f"127.0.0.1:{p.consul_http}", f"127.0.0.1:{p.xds}",
                   f"http://127.0.0.1:{p.otlp_grpc}", istio_dir_from_env(), lambda _: "127.0.0.1")

    @classmethod
    def istiod(cls, run_dir: pathlib.Path, offset: int = 0) -> Placement:
        """Local processes under real istiod: as `local`, but every mesh instance on a loopback address
        of its own (127.0.0.2, ...; the gateway, no xDS server, stays on 127.0.0.1). istiod finds a
        server's inbound listener by the node's IP: instances sharing one would all take the labels
        of the first WorkloadEntry at that address (platform-findings.md)."""
        local = cls.local(run_dir, offset)
        hosts = instance_hosts()
        return dataclasses.replace(local, hosts=lambda name: hosts.get(name, "127.0.0.1"))

    @classmethod
    def for_control_plane(cls, run_dir: pathlib.Path, offset: int = 0) -> Placement:
        return cls.istiod(run_dir, offset) if control_plane_from_env() == "istiod" else cls.local(run_dir, offset)


def instance_hosts() -> dict[str, str]:
    """Instance -> its own loopback address, in topology order (istiod mode)."""
    names = [i.name for s in SERVICES if s.protocol == "grpc" for i in s.instances]
    return {name: f"127.0.0.{index}" for index, name in enumerate(names, start=2)}


def write_bootstraps(placement: Placement) -> None:
    """One xDS bootstrap per instance (mesh/xds/bootstrap.py), written when the mesh starts."""
    for service in SERVICES:
        for instance in service.instances:
            node = bootstrap.Node(service.name, instance.name, instance.version, placement.hosts(instance.name),
                                  NAMESPACE)
            doc = bootstrap.bootstrap(node, placement.xds, placement.run_dir / "certs" / instance.name)
            bootstrap.write(bootstrap_path(placement.run_dir, instance.name), doc)


def control_plane_env(placement: Placement) -> dict[str, str]:
    run_dir = placement.run_dir
    port = placement.xds.rsplit(":", 1)[1]
    return {"MESH_XDS_HOST": placement.hosts("control-plane"), "MESH_XDS_PORT": port, "CONSUL_HTTP_ADDR": placement.consul,
            **_consul_token(run_dir, consul_acl.CONTROL_PLANE),
            "MESH_NAMESPACE": NAMESPACE, "MESH_ISTIO_DIR": str(placement.istio_dir), "OTEL_SERVICE_NAME": "control-plane",
            # the mesh CA and the certificates it issues to the folders every bootstrap names
            "MESH_RUN_DIR": str(run_dir), "MESH_CA_DIR": str(run_dir / "ca"), "MESH_CERTS_DIR": str(run_dir / "certs")}


def instance_env(service: Service, instance: Instance, placement: Placement) -> dict[str, str]:
    run_dir, offset = placement.run_dir, placement.offset
    return {
        "OTEL_SERVICE_NAME": service.name, "MESH_SERVICE_VERSION": instance.version,
        "MESH_INSTANCE_ID": instance.name, "MESH_NAMESPACE": NAMESPACE,
        "MESH_HOST": placement.hosts(instance.name), "MESH_PORT": str(instance.port + offset),
        "MESH_ADMIN_PORT": str(instance.admin_port + offset),
        "MESH_SERVICE_PORTS": service_ports(offset),
        "MESH_DATA_DIR": str(run_dir / "data"), "CONSUL_HTTP_ADDR": placement.consul,
        **_consul_token(run_dir, service.name),
        "GRPC_XDS_BOOTSTRAP": str(bootstrap_path(run_dir, instance.name)),
        "OTEL_EXPORTER_OTLP_ENDPOINT": placement.otlp,
        # Batches leave within a second, so a trace is in Jaeger by the time a person looks.
        "OTEL_BSP_SCHEDULE_DELAY": "1000",
        # gRPC C-core info lines are not JSON; its warnings and errors still reach the log.
        "GRPC_VERBOSITY": "ERROR",
        **_own_env(service.name, run_dir),
        **instance.env,
    }


def build(run_dir: pathlib.Path, offset: int = 0) -> list[Process]:
    p = Ports(offset)
    placement = Placement.for_control_plane(run_dir, offset)
    consul_addr = placement.consul
    infra = [
        Process(
            "consul", 1,
            (str(TOOLS / "consul"), "agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1", "-log-json",
             f"-node={CONSUL_NODE}", "-config-file", str(consul_acl.config_path(run_dir)),
             f"-http-port={p.consul_http}", f"-grpc-port={p.consul_grpc}",
             f"-grpc-tls-port={p.consul_grpc_tls}", f"-server-port={p.consul_server}",
             f"-serf-lan-port={p.consul_serf_lan}", f"-serf-wan-port={p.consul_serf_wan}", "-dns-port=-1"),
            {}, ("http", f"http://{consul_addr}/v1/status/leader"), port=p.consul_http,
        ),
        Process(
            "jaeger", 1,
            (str(TOOLS / "jaeger"), "--config", str(ROOT / "mesh" / "runner" / "jaeger.yaml")),
            {
                "JAEGER_OTLP_GRPC_PORT": str(p.otlp_grpc), "JAEGER_OTLP_HTTP_PORT": str(p.otlp_http),
                "JAEGER_QUERY_PORT": str(p.jaeger_query), "JAEGER_QUERY_GRPC_PORT": str(p.jaeger_query_grpc),
                "JAEGER_HEALTH_PORT": str(p.jaeger_health),
            },
            ("http", f"http://127.0.0.1:{p.jaeger_health}/status"), port=p.jaeger_query,
        ),
        *(istiod_processes(placement) if control_plane_from_env() == "istiod" else [
            Process("control-plane", 2, (str(PYTHON), "-m", "mesh.xds"), control_plane_env(placement),
                    ("grpc", placement.xds), port=p.xds)]),
    ]
    instances = []
    for service in SERVICES:
        for instance in service.instances:
            instances.append(
                Process(instance.name, 3, command_for(service.name, service.language),
                        {**instance_env(service, instance, placement), **_passed_on(service.name)},
                        ("consul", instance.name),
                        service=service.name, language=service.language, version=instance.version,
                        port=instance.port + offset, admin_port=instance.admin_port + offset,
                        host=placement.hosts(instance.name))
            )
    return infra + instances


def _consul_token(run_dir: pathlib.Path, name: str) -> dict[str, str]:
    """The path of a process's Consul token (mesh/runner/consul_acl.py), not the secret; and an empty
    CONSUL_HTTP_TOKEN so that one set in the developer's shell does not reach the process."""
    return {"CONSUL_HTTP_TOKEN_FILE": str(consul_acl.token_path(run_dir, name)), "CONSUL_HTTP_TOKEN": ""}


def addresses(offset: int = 0, run_dir: pathlib.Path | None = None) -> dict[str, str]:
    p = Ports(offset)
    login = consul_acl.token_path(run_dir or run_dir_from_env(), consul_acl.READ)
    return {
        "gateway": f"http://127.0.0.1:{p.gateway}",
        "consul UI": f"http://127.0.0.1:{p.consul_http}/ui  (Log in with the read-only token in {login})",
        "jaeger query API": f"http://127.0.0.1:{p.jaeger_query}/api/v3/services",
        "control plane (ADS, CSDS)": f"127.0.0.1:{p.xds}",
    }


# --- MESH_CONTROL_PLANE=istiod: the same instances and bootstraps, real istiod instead of mesh.xds ---

def control_plane_from_env() -> str:
    """`ours` (mesh.xds, the default) or `istiod` (tools/istiod: istiod-local)."""
    value = os.environ.get("MESH_CONTROL_PLANE", "ours") or "ours"
    if value not in CONTROL_PLANES:
        raise ValueError(f"MESH_CONTROL_PLANE={value!r}: expected one of {', '.join(CONTROL_PLANES)}")
    return value


def registry_dir(run_dir: pathlib.Path) -> pathlib.Path:
    """Where the runner writes the ServiceEntry and WorkloadEntry objects istiod reads."""
    return run_dir / "istiod" / "registry"


def istiod_istio_dir(placement: Placement) -> pathlib.Path:
    """The Istio resources istiod reads. istiod reads a folder recursively (symbolic links skipped),
    so istio/ itself, whose scenarios/ it would read too, is given as a copy of its top-level files
    taken at start (`sync_istiod_istio_dir`); a folder without subfolders (the tests' copy) is read
    as it is, and watched."""
    folder = placement.istio_dir
    if any(child.is_dir() for child in folder.iterdir()):
        return placement.run_dir / "istiod" / "istio"
    return folder


def sync_istiod_istio_dir(placement: Placement) -> None:
    target = istiod_istio_dir(placement)
    if target == placement.istio_dir:
        return
    target.mkdir(parents=True, exist_ok=True)
    for stale in target.glob("*.yaml"):
        stale.unlink()
    for source in sorted(placement.istio_dir.glob("*.yaml")):
        (target / source.name).write_bytes(source.read_bytes())


def registry_objects(placement: Placement) -> list[dict[str, Any]]:
    """Istio's registry for the local instances: a ServiceEntry per gRPC service (its hosts the
    service's FQDN, its port the service port) and a WorkloadEntry per instance (its own address, its
    service account = the service, labels app/version, the instance's port under the port's name)."""
    objects: list[dict[str, Any]] = []
    for service in SERVICES:
        if service.protocol != "grpc":
            continue
        port_name = f"grpc-{service.name}"
        objects.append({
            "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": service.name, "namespace": NAMESPACE},
            "spec": {"hosts": [f"{service.name}.{NAMESPACE}.svc.cluster.local"], "location": "MESH_INTERNAL",
                     "resolution": "STATIC",
                     "ports": [{"number": service.port + placement.offset, "name": port_name, "protocol": "GRPC"}],
                     "workloadSelector": {"labels": {"app": service.name}}},
        })
        for instance in service.instances:
            objects.append({
                "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                "metadata": {"name": instance.name, "namespace": NAMESPACE},
                "spec": {"address": placement.hosts(instance.name), "serviceAccount": service.name,
                         "labels": {"app": service.name, "version": instance.version},
                         "ports": {port_name: instance.port + placement.offset}},
            })
    return objects


def write_registry(placement: Placement) -> pathlib.Path:
    """registry.yaml in `registry_dir`, replaced atomically (istiod watches the folder)."""
    import yaml

    folder = registry_dir(placement.run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "registry.yaml"
    temp = folder / ".registry.yaml.tmp"
    temp.write_text(yaml.safe_dump_all(registry_objects(placement), sort_keys=False))
    temp.replace(path)
    return path


def istiod_processes(placement: Placement) -> list[Process]:
    """istiod-local, and the mesh CA's `certs` process: with no istio-agent beside each instance,
    our CA (mesh/xds/ca.py) writes every instance's certificate files where its bootstrap's
    `default` file_watcher provider reads them, the provider istiod's TLS settings name."""
    p = Ports(placement.offset)
    run_dir = placement.run_dir
    command = (str(TOOLS / "istiod-local"), "--grpc-addr", placement.xds, "--http-addr", f"127.0.0.1:{p.istiod_http}",
               "--config-dir", str(istiod_istio_dir(placement)), "--config-dir", str(registry_dir(run_dir)),
               "--work-dir", str(run_dir / "istiod" / "work"))
    certs_env = {"MESH_RUN_DIR": str(run_dir), "MESH_CA_DIR": str(run_dir / "ca"),
                 "MESH_CERTS_DIR": str(run_dir / "certs"), "MESH_PORT_OFFSET": str(placement.offset),
                 "MESH_CONTROL_PLANE": "istiod"}
    return [
        Process("certs", 2, (str(PYTHON), "-m", "mesh.runner.certs"), certs_env,
                ("file", str(run_dir / "certs" / ".issued")), port=0),
        Process("control-plane", 2, command,
                {"MESH_ISTIO_DIR": str(placement.istio_dir)},
                ("http", f"http://127.0.0.1:{p.istiod_http}/ready"), port=p.xds),
    ]


def run_dir_from_env() -> pathlib.Path:
    return pathlib.Path(os.environ.get("MESH_RUN_DIR", ROOT / ".run")).resolve()


def istio_dir_from_env() -> pathlib.Path:
    """The Istio resources the control plane enforces (hot-reloaded): istio/, or MESH_ISTIO_DIR."""
    return pathlib.Path(os.environ.get("MESH_ISTIO_DIR", ROOT / "istio")).resolve()


def offset_from_env() -> int:
    return int(os.environ.get("MESH_PORT_OFFSET", "0"))
