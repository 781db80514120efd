"""Watch Consul with blocking queries and turn what it says into an immutable `Catalog`.

One blocking query on `/v1/catalog/services` keeps the set of services; each service has its own
blocking query on `/v1/health/service/NAME?passing` with its own index, so a change costs one
request. Only passing instances are endpoints. While Consul is unreachable the last known catalog
stays (one warning per outage, one note on recovery).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping

import consul.aio

__all__ = ["Catalog", "ConsulWatcher", "Endpoint"]

log = logging.getLogger(__name__)

BLOCKING_WAIT = "30s"  # the longest Consul holds a blocking query
HTTP_TIMEOUT = 40.0  # seconds: BLOCKING_WAIT plus Consul's jitter (wait/16) plus slack
BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0  # seconds between retries while Consul fails
IGNORED_SERVICES = frozenset({"consul"})  # Consul's own servers are no mesh service


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One passing instance: its Consul service ID, where it listens, its service Meta."""

    instance_id: str
    address: str
    port: int
    meta: Mapping[str, str] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))


def _by_id(endpoints: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    return tuple(sorted(endpoints, key=lambda e: e.instance_id))


@dataclasses.dataclass(frozen=True)
class Catalog:
    """Service name -> its passing endpoints, sorted by instance id (possibly none)."""

    services: Mapping[str, tuple[Endpoint, ...]] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))

    @classmethod
    def of(cls, services: Mapping[str, Iterable[Endpoint]]) -> Catalog:
        return cls(types.MappingProxyType({name: _by_id(eps) for name, eps in sorted(services.items())}))


def endpoint_from_health_entry(entry: dict) -> Endpoint:
    service = entry["Service"]
    address = service.get("Address") or entry["Node"]["Address"]
    meta = types.MappingProxyType(dict(service.get("Meta") or {}))
    return Endpoint(service["ID"], address, int(service["Port"]), meta)


class _Outage:
    """Logs an outage once when it starts and once when it ends, whichever query sees it."""

    def __init__(self, addr: str) -> None:
        self._addr = addr
        self._down_since: float | None = None

    def failed(self, error: BaseException) -> None:
        if self._down_since is None:
            log.warning("consul unreachable at %s, keeping the last known catalog: %r", self._addr, error)
        self._down_since = time.monotonic()

    def ok(self, asked_at: float) -> None:
        # a Consul that is shutting down still answers some requests sent earlier: not a recovery
        if self._down_since is not None and asked_at > self._down_since:
            self._down_since = None
            log.info("consul reachable again at %s", self._addr)


class ConsulWatcher:
    """`run()` watches Consul and awaits `on_change(catalog)` (never concurrently) on every change
    of the passing endpoints. `ready` is set once the first complete catalog has been handed over."""

    def __init__(self, http_addr: str, on_change: Callable[[Catalog], Awaitable[None]]) -> None:
        host, _, port = http_addr.rpartition(":")
        self._consul = consul.aio.Consul(host=host, port=int(port), connections_timeout=HTTP_TIMEOUT)
        self._outage = _Outage(http_addr)
        self._on_change = on_change
        self._endpoints: dict[str, tuple[Endpoint, ...]] = {}  # filled by each service's first read
        self._service_tasks: dict[str, asyncio.Task] = {}
        self._changed = asyncio.Event()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        publisher = asyncio.create_task(self._publish_changes())
        try:
            await self._watch_services()
        finally:
            tasks = [publisher, *self._service_tasks.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._consul.close()

    async def _blocking(self, query: Callable[[str | None], Awaitable[tuple[str, object]]]) -> AsyncIterator:
        """Yield every new answer of a blocking query; retry with backoff while Consul fails."""
        index, backoff = None, BACKOFF_MIN
        while True:
            asked_at = time.monotonic()
            try:
                new_index, data = await query(index)
            except Exception as error:  # noqa: BLE001 - connection, timeout and HTTP errors alike
                self._outage.failed(error)
                # Consul may come back as a fresh dev agent whose index restarted lower; blocking on
                # our old index would then hang for BLOCKING_WAIT, so the next query starts afresh.
                index = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            self._outage.ok(asked_at)
            backoff = BACKOFF_MIN
            if index is not None and new_index == index:
                continue  # the wait ran out with no change
            index = new_index if new_index and int(new_index) > 0 else None  # Consul: never block on 0
            yield data

    async def _watch_services(self) -> None:
        async for services in self._blocking(lambda i: self._consul.catalog.services(index=i, wait=BLOCKING_WAIT)):
            names = set(services) - IGNORED_SERVICES
            for name in names - self._service_tasks.keys():
                self._service_tasks[name] = asyncio.create_task(self._watch_service(name), name=f"consul:{name}")
            for name in self._service_tasks.keys() - names:
                self._service_tasks.pop(name).cancel()
                self._endpoints.pop(name, None)
            self._changed.set()

    async def _watch_service(self, name: str) -> None:
        def query(index):
            return self._consul.health.service(name, index=index, wait=BLOCKING_WAIT, passing=True)

        async for entries in self._blocking(query):
            endpoints = _by_id(endpoint_from_health_entry(e) for e in entries)
            if self._endpoints.get(name) != endpoints:
                self._endpoints[name] = endpoints
                self._changed.set()

    async def _publish_changes(self) -> None:
        last = None
        while True:
            await self._changed.wait()
            self._changed.clear()
            if not self.ready.is_set() and self._service_tasks.keys() - self._endpoints.keys():
                continue  # the first catalog waits for each service's first read (which sets _changed)
            catalog = Catalog.of(self._endpoints)
            if catalog != last:
                last = catalog
                await self._on_change(catalog)
            self.ready.set()
