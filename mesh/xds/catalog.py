"""Watch Consul with a fixed number of connections and turn what it says into an immutable `Catalog`.

Two blocking queries, whatever the number of services (Consul allows 200 connections per client
address, so a query per service stops working past about 100 services):
- `/v1/health/state/any` filtered to the checks that do not pass (`NOT_PASSING`): small whatever
  the catalog's size. Which instances pass is computed here, as Consul's `?passing` does: no check
  of the instance or of its node is in that list (no check at all: passes).
- `/v1/catalog/services`: only its index is used, as the signal that some instance was
  registered, deregistered or changed (address, port, Meta: a change that leaves its checks alone
  and so is invisible in the health state). Then the instances are read node by node
  (`/v1/catalog/nodes`, `/v1/catalog/node/NAME`), at most `NODE_FETCHES` at a time, and the
  failing checks are read again, so that no instance is seen without its checks.
Both queries only set flags and wake one publisher, which computes the catalog from the newest
data and hands it over when it changed: nothing is lost, bursts coalesce.

While Consul is unreachable the last known catalog stays (one warning per outage, one note on
recovery). An instance that cannot be read is skipped with one warning naming it; the rest of its
service keeps flowing. Any other failure ends `run()` with that error (its supervisor logs it and
restarts it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import consul.aio

__all__ = ["Catalog", "ConsulWatcher", "Endpoint", "endpoints_from_health"]

log = logging.getLogger(__name__)

BLOCKING_WAIT = "30s"  # the longest Consul holds a blocking query
HTTP_TIMEOUT = 40.0  # seconds: BLOCKING_WAIT plus Consul's jitter (wait/16) plus slack
BACKOFF_MIN, BACKOFF_MAX = 0.1, 2.0  # seconds between retries while Consul fails
IGNORED_SERVICES = frozenset({"consul"})  # Consul's own servers are no mesh service
NOT_PASSING = 'Status != "passing"'  # Consul's ?passing excludes warning and critical alike
NODE_FETCHES = 4  # node reads in parallel; with the two blocking queries, the most connections held
CONNECTIONS = 2 + NODE_FETCHES + 2  # the HTTP pool: never near Consul's 200 per client


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


def endpoint_from_health_entry(entry: Any) -> Endpoint:
    """`entry`: Consul's JSON, checked as it is read (KeyError, TypeError, ValueError: unreadable)."""
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
                _warn_unreadable(service, what, error)
    warned.intersection_update(unreadable)  # a fixed entry that breaks again is named again
    warned.update(unreadable)
    return _by_id(endpoints)


def _warn_unreadable(service: str, what: str, error: BaseException) -> None:
    log.warning("skipping a malformed Consul health entry of service %r (%s): %s: %s", service, what,
                type(error).__name__, error, extra={"service": service})


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


@dataclasses.dataclass
class _Instance:
    """One registered instance as last read, with its endpoint (None if unreadable)."""

    node: str
    service: str
    raw: tuple[Any, Any]  # (node address, service) as Consul gave them: equal ones next time reuse `endpoint`
    endpoint: Endpoint | None


class ConsulWatcher:
    """`run()` watches Consul and awaits `on_change(catalog)` (never concurrently) on every change
    of the passing endpoints. `ready` is set once the first complete catalog has been handed over."""

    def __init__(self, http_addr: str, on_change: Callable[[Catalog], Awaitable[None]], token: str = "") -> None:
        """`token`: Consul's ACL token ("" for none); it needs read of every service and node."""
        host, _, port = http_addr.rpartition(":")
        self._consul = consul.aio.Consul(host=host, port=int(port), connections_timeout=HTTP_TIMEOUT,
                                         connections_limit=CONNECTIONS)
        self._consul.token = token  # py-consul would take CONSUL_HTTP_TOKEN from the environment over ours
        self._node_fetches = asyncio.Semaphore(NODE_FETCHES)
        self._outage = _Outage(http_addr)
        self._on_change = on_change
        self._checks: list[Any] | None = None  # the newest health state
        self._checks_index = 0
        self._instances: dict[tuple[str, str], _Instance] | None = None  # (node, service ID) -> instance
        self._catalog_moved = False
        self._unreadable: dict[str, set[str]] = {}  # service -> instances already warned about
        self._failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wake = asyncio.Event()
        self.ready = asyncio.Event()
        self.reads = 0  # instance reads (whole catalog) done, for tests and benchmarks

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._publish_changes(), name="consul:publish"),
                 asyncio.create_task(self._watch_health(), name="consul:health"),
                 asyncio.create_task(self._watch_catalog(), name="consul:catalog")]
        for task in tasks:
            task.add_done_callback(self._fail_on_error)
        try:
            await self._failure  # raises the first task's error
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._consul.close()

    def _fail_on_error(self, task: asyncio.Task[None]) -> None:
        if self._failure.done() or task.cancelled():
            return
        error = task.exception() or RuntimeError(f"{task.get_name()} ended")
        self._failure.set_exception(error)

    async def _blocking(self, query: Callable[[str | None], Awaitable[tuple[str, Any]]]) -> AsyncIterator[tuple[int, Any]]:
        """Yield (index, data) for every new answer of a blocking query; retry with backoff while
        Consul fails."""
        index, backoff = None, BACKOFF_MIN
        while True:
            asked_at = time.monotonic()
            try:
                new_index, data = await query(index)
            except Exception as error:  # noqa: BLE001 - connection, timeout and HTTP errors alike
                self._failed(error)
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
            yield int(new_index or 0), data

    def _failed(self, error: BaseException) -> None:
        self._outage.failed(error)
        self._checks_index = 0  # a restarted Consul counts from lower: take its next answer whatever its index

    def _take_checks(self, index: int, checks: Any) -> None:
        if index >= self._checks_index:  # an answer older than one already taken is dropped
            self._checks, self._checks_index = checks, index

    async def _watch_health(self) -> None:
        async for index, checks in self._blocking(lambda i: self._consul.health.state("any", index=i, wait=BLOCKING_WAIT,
                                                                                       filter_expr=NOT_PASSING)):
            self._take_checks(index, checks)
            self._wake.set()

    async def _watch_catalog(self) -> None:
        async for _index, _services in self._blocking(lambda i: self._consul.catalog.services(index=i,
                                                                                             wait=BLOCKING_WAIT)):
            self._catalog_moved = True
            self._wake.set()

    async def _read_instances(self) -> None:
        """Every registered instance, node by node; then the health state again, no older than them."""
        _, nodes = await self._consul.catalog.nodes()

        async def read(node: str) -> tuple[str, dict[str, Any]]:
            async with self._node_fetches:
                _, answer = await self._consul.catalog.node(node)
            return node, answer

        answers = await asyncio.gather(*(read(n["Node"]) for n in nodes))
        index, checks = await self._consul.health.state("any", filter_expr=NOT_PASSING)
        previous = self._instances or {}
        instances: dict[tuple[str, str], _Instance] = {}
        for node, answer in answers:
            if not answer:
                continue  # the node left between the two reads
            for service_id, raw in (answer.get("Services") or {}).items():
                key = (node, service_id)
                name = raw.get("Service") if isinstance(raw, dict) else None
                if not isinstance(name, str) or name in IGNORED_SERVICES:
                    continue
                node_address = (answer.get("Node") or {}).get("Address")
                known = previous.get(key)
                if known is not None and known.raw == (node_address, raw):
                    instances[key] = known
                    continue
                entry = {"Node": answer.get("Node"), "Service": raw}
                try:
                    endpoint = endpoint_from_health_entry(entry)
                except (KeyError, TypeError, ValueError, AttributeError) as error:
                    endpoint = None
                    what = _describe(entry)
                    if what not in self._unreadable.setdefault(name, set()):
                        self._unreadable[name].add(what)
                        _warn_unreadable(name, what, error)
                instances[key] = _Instance(node, name, (node_address, raw), endpoint)
        for name, warned in self._unreadable.items():  # a fixed entry that breaks again is named again
            warned.intersection_update({_describe({"Service": i.raw[1]}) for i in instances.values()
                                        if i.service == name and i.endpoint is None})
        self._instances = instances
        self._checks_index = 0  # this state is newer than anything the watch held
        self._take_checks(int(index or 0), checks)
        self.reads += 1

    def _catalog(self) -> Catalog:
        failing_nodes, failing = set(), set()
        for check in self._checks or ():
            if check.get("Status") != "passing":
                if check.get("ServiceID"):
                    failing.add((check.get("Node"), check["ServiceID"]))
                else:
                    failing_nodes.add(check.get("Node"))
        services: dict[str, list[Endpoint]] = {}
        for (node, service_id), instance in (self._instances or {}).items():
            endpoints = services.setdefault(instance.service, [])
            if instance.endpoint is not None and node not in failing_nodes and (node, service_id) not in failing:
                endpoints.append(instance.endpoint)
        return Catalog.of(services)

    async def _publish_changes(self) -> None:
        last = None
        backoff = BACKOFF_MIN
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._catalog_moved:
                self._catalog_moved = False
                asked_at = time.monotonic()
                try:
                    await self._read_instances()
                except Exception as error:  # noqa: BLE001 - Consul went away mid-read: read again later
                    self._failed(error)
                    self._catalog_moved = True
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    self._wake.set()
                    continue
                self._outage.ok(asked_at)
                backoff = BACKOFF_MIN
            if self._instances is None or self._checks is None:
                continue  # the first catalog waits for both queries' first answers
            catalog = self._catalog()
            if catalog != last:
                last = catalog
                await self._on_change(catalog)
            self.ready.set()
