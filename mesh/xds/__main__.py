"""`python -m mesh.xds`: the control plane. Watches Consul, serves ADS and grpc.health.v1 on one port.

Environment (defaults in brackets):
- `MESH_XDS_HOST` [127.0.0.1], `MESH_XDS_PORT` [18000; 0 picks a free port]: where ADS listens;
- `CONSUL_HTTP_ADDR` [127.0.0.1:8500]: Consul's HTTP API;
- `MESH_LOG_LEVEL` [info]: debug, info, warn, error.

Health for "" and for the ADS service is NOT_SERVING until the first Consul catalog has been
read and published. SIGTERM/SIGINT: NOT_SERVING, close the ADS streams, stop, exit 0.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Mapping

from envoy.service.discovery.v3 import ads_pb2
from grpc_health.v1 import health, health_pb2

from mesh.runtime import logs
from mesh.runtime.config import LOG_LEVELS, ConfigError, EnvReader
from mesh.xds.catalog import Catalog, ConsulWatcher
from mesh.xds.server import AdsServer, create_server
from mesh.xds.snapshot import SnapshotCache
from mesh.xds.translate import Policy, translate

log = logging.getLogger("mesh.xds")

SERVICE_NAME = "mesh-xds"
ADS_SERVICE = ads_pb2.DESCRIPTOR.services_by_name["AggregatedDiscoveryService"].full_name
STOP_GRACE = 2.0  # seconds for in-flight RPCs once the streams are closed


@dataclasses.dataclass(frozen=True)
class XdsConfig:
    host: str
    port: int
    consul_http_addr: str
    log_level: str


def load_config(environ: Mapping[str, str] | None = None) -> XdsConfig:
    reader = EnvReader(environ)
    config = XdsConfig(
        host=reader.string("MESH_XDS_HOST", "127.0.0.1"),
        port=reader.integer("MESH_XDS_PORT", 18000, minimum=0, maximum=65535),
        consul_http_addr=reader.string("CONSUL_HTTP_ADDR", "127.0.0.1:8500"),
        log_level=reader.string("MESH_LOG_LEVEL", "info", choices=LOG_LEVELS),
    )
    reader.finish()
    return config


async def serve(config: XdsConfig) -> None:
    cache = SnapshotCache()
    ads = AdsServer(cache)
    health_servicer = health.aio.HealthServicer()
    for name in ("", ADS_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    server, port = create_server(f"{config.host}:{config.port}", ads, health_servicer)
    await server.start()
    log.info("ADS listening on %s:%d", config.host, port, extra={"port": port})

    policy = Policy()  # the Istio resources in istio/ will feed this (roadmap item 1)

    async def on_catalog(catalog: Catalog) -> None:
        cache.update(translate(catalog, policy), policy)

    watcher = ConsulWatcher(config.consul_http_addr, on_catalog)

    async def serving_once_ready() -> None:
        await watcher.ready.wait()
        for name in ("", ADS_SERVICE):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("first Consul catalog published, SERVING")

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    watching, stopping = asyncio.create_task(watcher.run()), asyncio.create_task(stop.wait())
    tasks = [watching, stopping, asyncio.create_task(serving_once_ready())]
    try:  # the watcher only ends by failing, so this returns on a signal or a bug
        await asyncio.wait([watching, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        log.info("stopping")
        await health_servicer.enter_graceful_shutdown()
        ads.close()
        await server.stop(STOP_GRACE)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if not watching.cancelled() and watching.exception():
        raise watching.exception()
    log.info("stopped")


def main() -> int:
    try:
        config = load_config()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    logs.configure(SERVICE_NAME, f"{SERVICE_NAME}-{os.getpid()}", config.log_level)
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
