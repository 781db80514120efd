"""Watch Consul with blocking queries and turn what it says into an immutable `Catalog`.

One blocking query on `/v1/catalog/services` keeps the set of services; each service has its own
blocking query on `/v1/health/service/NAME?passing` with its own index, so a change costs one
request. Only passing instances are endpoints. While Consul is unreachable the last known catalog
stays (one warning per outage, one note on recovery). A health entry that cannot be read is
skipped with one warning naming it; the rest of its service keeps flowing. Any other failure of
any of the watcher's tasks ends `run()` with that error (its supervisor logs it and restarts).
(Issue 6 replaces the query per service with a bounded number of watches.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping

import consul.aio

__all__ = ["Catalog", "ConsulWatcher", "Endpoint", "endpoints_from_health"]

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
    meta = types.MappingProxyType({str(k): str(v) for k, v in (service.get("Meta") or {}).items()})
    if not isinstance(service["ID"], str) or not isinstance(address, str) or not address:
        raise ValueError(f"ID {service['ID']!r} / Address {address!r}: not strings")
    return Endpoint(service["ID"], address, int(service["Port"]), meta)


def _describe(entry: object) -> str:
    if isinstance(entry, dict) and isinstance(entry.get("Service"), dict):
        return f"instance {entry['Service'].get('ID')!r}"
    return f"entry {str(entry)[:120]!r}"


def endpoints_from_health(service: str, entries: Iterable[object], warned: set[str]) -> tuple[Endpoint, ...]:
    """The endpoints of the entries that can be read; each one that cannot is skipped, with one
    warning naming it (`warned` remembers which were named, so a re-read does not repeat it)."""
    endpoints, unreadable = [], set()
    for entry in entries:
        try:
            endpoints.append(endpoint_from_health_entry(entry))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            what = _describe(entry)
            unreadable.add(what)
            if what not in warned:
                log.warning("skipping a malformed Consul health entry of service %r (%s): %s: %s", service, what,
                            type(error).__name__, error, extra={"service": service})
    warned.intersection_update(unreadable)  # a fixed entry that breaks again is named again
    warned.update(unreadable)
    return _by_id(endpoints)


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
        self._unreadable: dict[str, set[str]] = {}  # service -> entries already warned about
        self._failure: asyncio.Future = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Event()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        publisher = asyncio.create_task(self._publish_changes(), name="consul:publish")
        services = asyncio.create_task(self._watch_services(), name="consul:services")
        for task in (publisher, services):
            task.add_done_callback(self._fail_on_error)
        try:
            await self._failure  # raises the first task's error
        finally:
            tasks = [publisher, services, *self._service_tasks.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._consul.close()

    def _fail_on_error(self, task: asyncio.Task) -> None:
        if self._failure.done() or task.cancelled():
            return
        error = task.exception() or RuntimeError(f"{task.get_name()} ended")
        self._failure.set_exception(error)

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
                task = asyncio.create_task(self._watch_service(name), name=f"consul:{name}")
                task.add_done_callback(self._fail_on_error)
                self._service_tasks[name] = task
            for name in self._service_tasks.keys() - names:
                self._service_tasks.pop(name).cancel()
                self._endpoints.pop(name, None)
                self._unreadable.pop(name, None)
            self._changed.set()

    async def _watch_service(self, name: str) -> None:
        def query(index):
            return self._consul.health.service(name, index=index, wait=BLOCKING_WAIT, passing=True)

        async for entries in self._blocking(query):
            endpoints = endpoints_from_health(name, entries, self._unreadable.setdefault(name, set()))
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
