"""`python -m mesh.xds`: the control plane. Watches Consul, serves ADS, CSDS and grpc.health.v1
on one port, and is the mesh CA: it issues and rotates every connected instance's certificate.

Environment (defaults in brackets):
- `MESH_XDS_HOST` [127.0.0.1], `MESH_XDS_PORT` [18000; 0 picks a free port]: where it listens;
- `MESH_NAMESPACE` [default]: the namespace of every service in the catalog (FQDNs
  `NAME.NAMESPACE.svc.cluster.local`); a node's bare `NAME:PORT` uses the node's own namespace;
- `CONSUL_HTTP_ADDR` [127.0.0.1:8500]: Consul's HTTP API;
- `CONSUL_HTTP_TOKEN` or `CONSUL_HTTP_TOKEN_FILE` [none]: Consul's ACL token, or a file holding it
  (Consul's own variables); it needs only read of every service and node (the runner's
  `control-plane.token`, mesh/runner/consul_acl.py);
- `MESH_LOG_LEVEL` [info]: debug, info, warn, error;
- `MESH_XDS_DEBOUNCE_AFTER` [0.02], `MESH_XDS_DEBOUNCE_MAX` [0.25]: seconds of quiet a rebuild waits
  for after a catalog change, and the most it waits (istiod's PILOT_DEBOUNCE_AFTER/MAX);
- `MESH_ISTIO_DIR` [none]: a folder whose `*.yaml` files hold Istio VirtualServices and
  DestinationRules (`mesh.xds.istio`), watched and applied within a second of an edit;
- `MESH_XDS_UNACKED_TIMEOUT` [30]: seconds a response may stay unanswered while newer state waits
  before the stream is closed (its client stopped reading);
- `MESH_RUN_DIR` [.run in the repository]: the run folder, where the two below default to;
- `MESH_CA_DIR` [MESH_RUN_DIR/ca]: the mesh CA (`mesh.xds.ca`): its EC P-256 key `ca.key` (0600)
  and self-signed root `root-cert.pem`, made at the first start and reused after; a key readable by
  group or others is refused (exit 2, the log says why);
- `MESH_CERTS_DIR` [MESH_RUN_DIR/certs]: one folder per instance with `cert-chain.pem`, `key.pem`
  (0600) and `root-cert.pem`, where the instance's bootstrap points gRPC's `file_watcher`
  certificate provider (mesh/xds/bootstrap.py);
- `MESH_CERT_TTL` [3600, at least 2]: seconds a workload certificate lives.

Workload identity: when a node opens its ADS stream, its instance gets a certificate for
`spiffe://cluster.local/ns/NAMESPACE/sa/SERVICE` (the node's namespace and `app` label) before the
stream is answered, unless its files hold one of this CA not past half its lifetime; while the node
stays connected, the certificate is replaced at half its lifetime (as istio-agent renews). Each
issuance is logged at INFO with the instance, SPIFFE id, serial and expiry; key material never is.
Nothing serves TLS with these certificates yet (PeerAuthentication is to come). Any local process
that reaches the control plane can name any instance; the files stay on this machine.

`polymesh.controlplane.v1.StatusService` (`mesh.xds.status`) says why, for `make status`.
Health: "" and the ADS service are NOT_SERVING until the first Consul catalog has been published,
and again while a background task (the Consul watcher, the reconciler, certificate rotation) has
failed and not yet recovered. `mesh.xds.translation` is NOT_SERVING while some service's
translation fails (its last good resources keep serving; the reason is in the log and in CSDS):
the control plane as a whole still serves every other service, as istiod stays ready when one
resource is bad.
`mesh.xds.policy` is NOT_SERVING while some Istio resource in MESH_ISTIO_DIR is rejected (its
last good version keeps serving; the file, resource and reason are in the log).
SIGTERM/SIGINT: NOT_SERVING, close the ADS streams, stop, exit 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Mapping
from pathlib import Path

from envoy.service.discovery.v3 import ads_pb2, ads_pb2_grpc
from envoy.service.status.v3 import csds_pb2_grpc
from grpc_health.v1 import health, health_pb2_grpc

from mesh.runtime import logs
from mesh.runtime.config import LOG_LEVELS, ConfigError, EnvReader
from mesh.xds.ca import DEFAULT_TTL, MIN_TTL, CAError, Issuer, MeshCA
from mesh.xds.catalog import Catalog, ConsulWatcher
from mesh.xds.csds import CsdsServer
from mesh.xds.istio import IstioDir, Policy
from mesh.xds.names import ServiceKey
from mesh.xds.reconcile import DEBOUNCE_AFTER, DEBOUNCE_MAX, Reconciler
from mesh.xds.resources import ResourceStore
from mesh.xds.server import UNACKED_TIMEOUT, AdsServer, create_server
from mesh.xds.status import StatusServer
from mesh.xds.status import response as status_response
from mesh.xds.supervise import Health, Supervisor
from polymesh.controlplane.v1 import status_pb2_grpc

log = logging.getLogger("mesh.xds")

SERVICE_NAME = "mesh-xds"
ADS_SERVICE = ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name
TRANSLATION_HEALTH = "mesh.xds.translation"
POLICY_HEALTH = "mesh.xds.policy"
STOP_GRACE = 2.0  # seconds for in-flight RPCs once the streams are closed
FORGET_EVERY = 60.0  # seconds between sweeps of resources no node subscribes to any more
RUN_DIR = Path(__file__).resolve().parents[2] / ".run"  # the runner's default run folder


@dataclasses.dataclass(frozen=True)
class XdsConfig:
    host: str
    port: int
    namespace: str
    consul_http_addr: str
    log_level: str
    istio_dir: str = ""
    consul_token: str = dataclasses.field(default="", repr=False)  # a secret: never in a log line
    debounce_after: float = DEBOUNCE_AFTER
    debounce_max: float = DEBOUNCE_MAX
    unacked_timeout: float = UNACKED_TIMEOUT
    ca_dir: str = str(RUN_DIR / "ca")
    certs_dir: str = str(RUN_DIR / "certs")
    cert_ttl: float = DEFAULT_TTL


def load_config(environ: Mapping[str, str] | None = None) -> XdsConfig:
    reader = EnvReader(environ)
    run_dir = Path(reader.string("MESH_RUN_DIR", str(RUN_DIR)))
    config = XdsConfig(
        host=reader.string("MESH_XDS_HOST", "127.0.0.1"),
        port=reader.integer("MESH_XDS_PORT", 18000, minimum=0, maximum=65535),
        namespace=reader.string("MESH_NAMESPACE", "default"),
        consul_http_addr=reader.string("CONSUL_HTTP_ADDR", "127.0.0.1:8500"),
        consul_token=reader.consul_token(),
        log_level=reader.string("MESH_LOG_LEVEL", "info", choices=LOG_LEVELS),
        istio_dir=reader.string("MESH_ISTIO_DIR", ""),
        debounce_after=reader.seconds("MESH_XDS_DEBOUNCE_AFTER", DEBOUNCE_AFTER),
        debounce_max=reader.seconds("MESH_XDS_DEBOUNCE_MAX", DEBOUNCE_MAX),
        unacked_timeout=reader.seconds("MESH_XDS_UNACKED_TIMEOUT", UNACKED_TIMEOUT),
        ca_dir=reader.string("MESH_CA_DIR", str(run_dir / "ca")),
        certs_dir=reader.string("MESH_CERTS_DIR", str(run_dir / "certs")),
        cert_ttl=reader.seconds("MESH_CERT_TTL", DEFAULT_TTL, minimum=MIN_TTL),
    )
    reader.finish()
    return config


async def serve(config: XdsConfig, issuer: Issuer | None = None) -> None:
    """`issuer`: the mesh CA's, which gives every connecting node its certificate files (None: none)."""
    store = ResourceStore()
    health_servicer = health.aio.HealthServicer()
    status = Health(health_servicer, ("", ADS_SERVICE), TRANSLATION_HEALTH, POLICY_HEALTH)
    await status.update()
    supervisor = Supervisor(status.update, status.failing)

    def on_rebuilt() -> None:
        supervisor.healthy("reconciler")
        if status.translation_failures != len(reconciler.failures) or not status.published:
            status.translation_failures = len(reconciler.failures)
            status.published = True
            supervisor.health_changed()
        ads.notify()

    reconciler = Reconciler(store, config.namespace, on_rebuilt=on_rebuilt, debounce_after=config.debounce_after,
                            debounce_max=config.debounce_max)
    ads = AdsServer(store, config.namespace, stale_reasons=reconciler.failures,
                    unacked_timeout=config.unacked_timeout, on_node=issuer.ensure if issuer else None)

    def on_policy(policy: Policy, rejections: dict[str, str]) -> None:
        reconciler.set_policy(policy)
        if status.policy_rejections != len(rejections):
            status.policy_rejections = len(rejections)
            supervisor.health_changed()

    istio = IstioDir(Path(config.istio_dir), config.namespace, on_policy) if config.istio_dir else None
    server, port = create_server(
        f"{config.host}:{config.port}",
        (ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server, ads),
        (csds_pb2_grpc.add_ClientStatusDiscoveryServiceServicer_to_server, CsdsServer(ads.status)),
        (health_pb2_grpc.add_HealthServicer_to_server, health_servicer),
        (status_pb2_grpc.add_StatusServiceServicer_to_server,
         StatusServer(lambda: status_response(istio, reconciler.failures, status.failing))))
    await server.start()
    log.info("ADS, CSDS, health and status listening on %s:%d (namespace %s)", config.host, port, config.namespace,
             extra={"port": port})

    async def watch_istio() -> None:

        log.info("reading Istio resources from %s", config.istio_dir)
        assert istio is not None  # started only with an Istio folder
        await istio.run()

    async def watch_consul() -> None:
        async def on_catalog(catalog: Catalog) -> None:
            reconciler.set_catalog(catalog)
            if istio is not None:  # hosts must be mesh services; the policy rebuild coalesces with this one
                istio.set_services(ServiceKey(name, config.namespace) for name in catalog.services)

        watcher = ConsulWatcher(config.consul_http_addr, on_catalog, config.consul_token)

        async def healthy_once_ready() -> None:
            await watcher.ready.wait()
            supervisor.healthy("consul watcher")

        ready = asyncio.create_task(healthy_once_ready())
        try:
            await watcher.run()
        finally:
            ready.cancel()

    async def forget_unused() -> None:
        while True:
            await asyncio.sleep(FORGET_EVERY)
            dropped = store.forget(ads.in_use)
            if dropped:
                log.debug("forgot %d resources no node subscribes to", dropped)

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    tasks = [asyncio.create_task(supervisor.run("consul watcher", watch_consul)),
             asyncio.create_task(supervisor.run("reconciler", reconciler.run)),
             asyncio.create_task(supervisor.run("resource sweeper", forget_unused))]
    if istio is not None:
        tasks.append(asyncio.create_task(supervisor.run("istio watcher", watch_istio)))
    if issuer is not None:
        def rotate() -> Awaitable[None]:
            return issuer.rotate_forever(ads.identities, on_round=lambda: supervisor.healthy("certificate rotation"))

        tasks.append(asyncio.create_task(supervisor.run("certificate rotation", rotate)))
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await health_servicer.enter_graceful_shutdown()
        ads.close()
        await server.stop(STOP_GRACE)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    log.info("stopped")


def main() -> int:
    try:
        config = load_config()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    logs.configure(SERVICE_NAME, f"{SERVICE_NAME}-{os.getpid()}", config.log_level)
    try:
        ca = MeshCA.load_or_create(Path(config.ca_dir))
    except (CAError, OSError) as error:
        log.error("cannot use the mesh CA: %s", error, extra={"ca_dir": config.ca_dir})
        return 2
    asyncio.run(serve(config, Issuer(ca, Path(config.certs_dir), config.cert_ttl)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
