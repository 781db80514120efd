"""The life of one mesh instance (docs/runtime-contract.md, "Life of an instance").

A service supplies its servicers; `Instance` starts the xDS-managed business server and the plain
admin server (health + reflection), waits for the control plane's listener, turns health to
SERVING, registers in Consul, and on SIGTERM/SIGINT goes NOT_SERVING, deregisters, drains and
flushes spans before exiting.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from types import ModuleType
from typing import Any

import consul
import grpc
import grpc_admin
from consul.callback import CB
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mesh.runtime import logs, tracing
from mesh.runtime.config import ConfigError, EnvReader, InstanceConfig, load_instance_config
from mesh.runtime.deadlines import OutboundDeadline
from mesh.runtime.errors import ErrorInterceptor
from mesh.runtime.incoming import IncomingCalls
from mesh.runtime.injection import injected_failures
from mesh.runtime.propagation import OutboundHeaders
from mesh.runtime.routes import RouteTimeouts
from mesh.runtime.tracing import UNTRACED_SERVICES

__all__ = ["CONFIG_ERROR_EXIT", "Instance", "Servicer", "dial", "load_config_or_exit", "run", "xds_target"]

log = logging.getLogger(__name__)

CONFIG_ERROR_EXIT = 2
ADMIN_SERVICES = UNTRACED_SERVICES  # what the admin port serves besides reflection of the business services
LANGUAGE = "python"
# How long to wait for the control plane's listener before giving up (grpcio itself gives up
# on a missing listener resource after 15 s and logs "not serving").
LISTENER_WAIT_SECONDS = 30.0
BUSINESS_WORKERS = 16
KEEP_REGISTERED_EVERY = 2.0  # seconds between checks that Consul still knows this instance
REGISTER_RETRY_FIRST, REGISTER_RETRY_MAX = 0.1, 5.0  # seconds between tries while Consul is down
LISTENER_CHECK_EVERY = 1.0  # seconds between checks that the business listener still serves
LISTENER_PROBE_SECONDS = 0.3  # how long a connection must stay open to count as served
LISTENER_LOST_AFTER = 3  # probes more, LISTENER_RECHECK_SECONDS apart, before a listener counts as lost
LISTENER_RECHECK_SECONDS = 0.2
CONSUL_TIMEOUT = 2.0


@dataclasses.dataclass(frozen=True)
class Servicer:
    """One gRPC service of an instance: its full name and how to add it to a server."""

    name: str  # e.g. "shop.catalog.v1.CatalogService"
    add_to_server: Callable[[grpc.Server], None]

    @classmethod
    def of(cls, pb2_module: ModuleType, service: str, add: Callable[[Any, grpc.Server], None],
           servicer: object) -> Servicer:
        """`Servicer.of(catalog_pb2, "CatalogService", add_CatalogServiceServicer_to_server, impl)`."""
        return cls(pb2_module.DESCRIPTOR.services_by_name[service].full_name, lambda server: add(servicer, server))


def xds_target(config: InstanceConfig, service: str) -> str:
    """`xds:///NAME:PORT`, PORT being the service's port in MESH_SERVICE_PORTS; with MESH_XDS off,
    `dns:///NAME.NAMESPACE.svc.cluster.local:PORT` (the Kubernetes Service, whose traffic the
    Envoy sidecar intercepts)."""
    port = config.service_ports.get(service)
    if port is None:
        raise LookupError(f"MESH_SERVICE_PORTS has no port for service {service!r} "
                          f"(it declares: {', '.join(config.service_ports) or 'nothing'})")
    if not config.xds:
        return f"dns:///{service}.{config.namespace}.svc.cluster.local:{port}"
    return f"xds:///{service}:{port}"


def dial(config: InstanceConfig, service: str) -> grpc.Channel:
    """A channel to a mesh service: xDS (TLS when the control plane says so), traced, every call
    carrying its routing headers (mesh/runtime/propagation.py) and bounded by the incoming RPC's
    deadline or MESH_CALL_TIMEOUT and by its route's timeout (mesh/runtime/deadlines.py, routes.py).
    The headers go on first (the outermost interceptor runs first): the route is chosen on them."""
    target = xds_target(config, service)
    if config.xds:
        credentials = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())
        channel = grpc.secure_channel(target, credentials)
        routes: RouteTimeouts | None = RouteTimeouts(target, channel)
    else:  # plain gRPC: the sidecar does TLS and routing (and its route timeouts)
        channel = grpc.insecure_channel(target)
        routes = None
    outbound = (OutboundHeaders(config.propagate_headers), OutboundDeadline(config.call_timeout, routes))
    return tracing.traced_channel(grpc.intercept_channel(channel, *outbound))


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _serves(host: str, port: int) -> bool:
    """Whether an xDS-managed grpcio server on host:port has a listener. Without one it either
    does not listen (before its first listener) or accepts and at once closes every connection
    (after losing it); with one it keeps the connection open for the handshake (plaintext or TLS),
    possibly sending its HTTP/2 settings first. grpcio offers Python no serving-status callback."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as connection:
            connection.settimeout(LISTENER_PROBE_SECONDS)
            try:
                return connection.recv(1) != b""
            except TimeoutError:
                return True  # still open, waiting for our handshake
    except OSError:  # refused or reset
        return False


class _Outage:
    """Logs a Consul outage once when it starts (WARN) and once when it ends (INFO)."""

    def __init__(self, address: str) -> None:
        self._address = address
        self._down = False

    def failed(self, error: BaseException) -> None:
        if not self._down:
            log.warning("consul unreachable at %s; will register when it is back", self._address,
                        extra={"error": str(error)})
        self._down = True

    def over(self) -> None:
        if self._down:
            log.info("consul reachable again at %s", self._address)
        self._down = False


class Instance:
    def __init__(self, config: InstanceConfig, servicers: Sequence[Servicer], *, port: int | None = None) -> None:
        """`port` set means the business port is served by someone else (the gateway's HTTP
        server): no xDS-managed gRPC server is started and that port is what Consul gets."""
        self.config = config
        self.servicers = list(servicers)
        self._serve_grpc = port is None
        self.port = port if port is not None else (config.port or _free_port(config.host))
        self.admin_port = 0
        self.health = health.HealthServicer(
            experimental_non_blocking=True,
            experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=2),
        )
        self._business: grpc.Server | None = None
        self._admin: grpc.Server | None = None
        self._consul = consul.Consul(*_split_host_port(config.consul_http_addr), connections_timeout=CONSUL_TIMEOUT)
        self._consul.token = config.consul_token  # py-consul would take CONSUL_HTTP_TOKEN from the environment over ours
        self._registered = False
        self._stopped = threading.Event()
        self._keeper: threading.Thread | None = None

    # -- start -------------------------------------------------------------------------------
    def start(self) -> None:
        names = [s.name for s in self.servicers]
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self._admin = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._admin)
        grpc_admin.add_admin_servicers(self._admin)  # CSDS (this process's xDS config) and channelz
        reflection.enable_server_reflection((*names, *ADMIN_SERVICES), self._admin)
        self.admin_port = self._admin.add_insecure_port(f"{self.config.host}:{self.config.admin_port}")
        self._admin.start()
        if self._serve_grpc and not self.config.xds:
            self._start_plain_business_server()
        elif self._serve_grpc:
            self._start_business_server()
            threading.Thread(target=self._watch_listener, name="listener-watch", daemon=True).start()
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        if self.config.register:
            self._register()
        log.info("serving", extra={"port": self.port, "admin_port": self.admin_port, "services": names})

    def _business_server(self, *, xds: bool) -> grpc.Server:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=BUSINESS_WORKERS),
            interceptors=[*tracing.traced_server_interceptors(), IncomingCalls(), ErrorInterceptor(),
                          *injected_failures(self.config)],
            xds=xds,
        )
        for servicer in self.servicers:
            servicer.add_to_server(server)
        return server

    def _start_plain_business_server(self) -> None:
        """MESH_XDS off: a plain server, serving at once (the Envoy sidecar does TLS and policy)."""
        self._business = self._business_server(xds=False)
        self._business.add_insecure_port(f"{self.config.host}:{self.port}")
        self._business.start()

    def _start_business_server(self) -> None:
        self._business = self._business_server(xds=True)
        credentials = grpc.xds_server_credentials(grpc.insecure_server_credentials())
        self._business.add_secure_port(f"{self.config.host}:{self.port}", credentials)
        self._business.start()
        log.info("waiting for the control plane's listener", extra={"port": self.port, "admin_port": self.admin_port})
        self._wait_for_listener()

    def _wait_for_listener(self) -> None:
        deadline = time.monotonic() + LISTENER_WAIT_SECONDS
        while not _accepts(self.config.host, self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the control plane sent no listener for {self.config.host}:{self.port} "
                    f"within {LISTENER_WAIT_SECONDS:.0f} s (is it running? GRPC_XDS_BOOTSTRAP={self.config.xds_bootstrap})"
                )
            time.sleep(0.05)

    def _set_health(self, status: int) -> None:
        for name in ("", *(s.name for s in self.servicers)):
            self.health.set(name, status)

    def _register(self) -> None:
        self._registered = True  # from here on, stop() deregisters (harmless if never registered)
        self._keeper = threading.Thread(target=self._keep_registered, name="consul-keeper", daemon=True)
        self._keeper.start()

    def _keep_registered(self) -> None:
        """Register, retrying with backoff while Consul cannot be reached; then every 2 s ask the
        agent whether it still knows this instance and register again when it does not (a
        `consul agent -dev` that restarts, or any agent that loses its state, forgets it)."""
        outage = _Outage(self.config.consul_http_addr)
        wait = REGISTER_RETRY_FIRST
        while not self._stopped.is_set():
            try:
                self._send_registration()
                outage.over()
                log.info("registered in Consul", extra={"consul": self.config.consul_http_addr})
                break
            except Exception as error:  # noqa: BLE001 - Consul down: say so once, keep trying
                outage.failed(error)
            self._stopped.wait(wait)
            wait = min(wait * 2, REGISTER_RETRY_MAX)
        while not self._stopped.wait(KEEP_REGISTERED_EVERY):
            try:
                if not self._agent_knows_me():
                    self._send_registration()
                    log.info("re-registered in Consul")
                outage.over()
            except Exception as error:  # noqa: BLE001 - Consul down: say so once, keep trying
                outage.failed(error)

    def _watch_listener(self) -> None:
        """Health follows the business listener: NOT_SERVING while the control plane has taken it
        away (grpcio then stops accepting connections), SERVING again when it is back."""
        serving = True
        while not self._stopped.wait(LISTENER_CHECK_EVERY):
            accepting = _serves(self.config.host, self.port)
            # a listener being replaced (a policy edit: RBAC, mTLS) closes the connections it had:
            # lost only when it stays so for a few probes more
            for _ in range(LISTENER_LOST_AFTER if serving and not accepting else 0):
                if self._stopped.wait(LISTENER_RECHECK_SECONDS) or (accepting := _serves(self.config.host, self.port)):
                    break
            if accepting != serving and not self._stopped.is_set():
                serving = accepting
                self._set_health(health_pb2.HealthCheckResponse.SERVING if serving
                                 else health_pb2.HealthCheckResponse.NOT_SERVING)
                log.log(logging.INFO if serving else logging.WARNING,
                        "business listener %s: %s", "back" if serving else "lost",
                        "SERVING" if serving else "NOT_SERVING", extra={"port": self.port})

    def _agent_knows_me(self) -> bool:
        """GET /v1/agent/service/<id>: False on 404. (py-consul 1.8's `agent.service_definition`
        sends no X-Consul-Token, which an agent with ACLs answers with 403.)"""
        path = f"/v1/agent/service/{self.config.instance_id}"
        return self._consul.http.get(CB.json(), path, headers=self._consul.prepare_headers()) is not None

    def _send_registration(self) -> None:
        c = self.config
        self._consul.agent.service.register(
            c.service_name,
            service_id=c.instance_id,
            address=c.host,
            port=self.port,
            tags=[c.service_version, LANGUAGE],
            meta={
                "version": c.service_version,
                "language": LANGUAGE,
                "admin_port": str(self.admin_port),
                "protocol": "grpc" if self._serve_grpc else "http",
            },
            check=consul.Check.grpc(f"{c.host}:{self.admin_port}", "1s", timeout="1s", deregister="1m"),
        )

    # -- stop --------------------------------------------------------------------------------
    def stop(self) -> None:
        """NOT_SERVING -> deregister -> drain (bounded) -> flush spans. Safe to call twice."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._keeper is not None:
            self._keeper.join(CONSUL_TIMEOUT + 1)  # never re-registers after this point
        if self._registered:
            try:
                self._consul.agent.service.deregister(self.config.instance_id)
                log.info("deregistered from Consul")
            except Exception as error:  # noqa: BLE001 - Consul down must not block the shutdown
                log.warning("could not deregister from Consul: %s", error)
        drains = [s.stop(self.config.drain_timeout) for s in (self._business, self._admin) if s is not None]
        for done in drains:
            done.wait(self.config.drain_timeout + 1)
        log.info("stopped")

    def wait_for_signal(self) -> None:
        stop_requested = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop_requested.set())
        stop_requested.wait()
        log.info("shutting down on signal")
        self.stop()


def _split_host_port(address: str) -> tuple[str, int]:
    address = address.removeprefix("http://")
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port or 8500)


def load_config_or_exit(
    default_service_name: str, read_settings: Callable[[EnvReader], object] = lambda reader: None
) -> tuple[InstanceConfig, object]:
    """The contract's variables and the service's own (`read_settings`), all checked at once;
    any bad value ends the process with exit code 2 and one line naming every bad variable."""
    reader = EnvReader()
    try:
        config = load_instance_config(default_service_name, reader=reader)
        settings = read_settings(reader)
        reader.finish()
    except ConfigError as error:
        print(f"{default_service_name}: {error}", file=sys.stderr)
        sys.exit(CONFIG_ERROR_EXIT)
    return config, settings


def run(
    default_service_name: str,
    make_servicers: Callable[[InstanceConfig, object], Sequence[Servicer]],
    read_settings: Callable[[EnvReader], object] = lambda reader: None,
) -> None:
    """Entry point shared by the Python gRPC services: `make_servicers` builds the servicers
    once logging, tracing and the data folder are ready."""
    config, settings = load_config_or_exit(default_service_name, read_settings)
    logs.configure(config.service_name, config.instance_id, config.log_level)
    provider = tracing.setup_tracing(config)
    os.makedirs(config.data_dir, exist_ok=True)
    instance = Instance(config, make_servicers(config, settings))
    code = 0
    try:
        instance.start()
        instance.wait_for_signal()
    except Exception:
        log.exception("instance failed")
        instance.stop()
        code = 1
    provider.shutdown()
    sys.exit(code)
