"""The reconciler: holds the latest catalog and policy, and rebuilds the resources when either
changes, one service at a time.

A service is translated again only when its endpoints (or the policy) changed. A service whose
translation fails keeps its last good model, so every resource built from it keeps serving its
last good version; the failure is logged once per distinct reason, listed in `failures` (the
control plane's health and CSDS show it) and cleared, with a note, when the inputs translate again.

Bursts are debounced as istiod debounces pushes: a rebuild waits until no new input has come for
`debounce_after` seconds, but never more than `debounce_max` after the first input it holds, so a
lone change waits `debounce_after` and a stream of changes is rebuilt at least every `debounce_max`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from mesh.xds.catalog import Catalog, Endpoint
from mesh.xds.names import ServiceKey
from mesh.xds.resources import ResourceStore
from mesh.xds.translate import Policy, ServiceModel, TranslationError, translate_service

__all__ = ["Reconciler"]

log = logging.getLogger(__name__)

DEBOUNCE_AFTER = 0.02  # seconds of quiet before a rebuild (istiod: PILOT_DEBOUNCE_AFTER, 100 ms)
DEBOUNCE_MAX = 0.25  # seconds a rebuild may wait for quiet at most (istiod: PILOT_DEBOUNCE_MAX, 10 s)


class Reconciler:
    """`set_catalog` / `set_policy` hand over the newest inputs; `run()` rebuilds after each change
    (bursts coalesce: a rebuild always takes the newest inputs) and calls `on_change()` when some
    resource changed. `rebuild()` does one pass synchronously (tests of pure units use it)."""

    def __init__(self, store: ResourceStore, namespace: str, on_change: Callable[[], None] = lambda: None,
                 on_rebuilt: Callable[[], None] = lambda: None, debounce_after: float = DEBOUNCE_AFTER,
                 debounce_max: float = DEBOUNCE_MAX) -> None:
        self.store = store
        self.namespace = namespace
        self.failures: dict[ServiceKey, str] = {}  # services whose last translation failed, and why
        self.rebuilds = 0  # passes completed
        self._on_change = on_change
        self._on_rebuilt = on_rebuilt
        self._catalog: Catalog | None = None
        self._policy = Policy()
        self._inputs: dict[ServiceKey, tuple[Endpoint, ...]] = {}  # what each model was last built from
        self._translated_policy: Policy | None = None
        self._dirty = asyncio.Event()
        self._debounce_after, self._debounce_max = debounce_after, debounce_max

    def set_catalog(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._dirty.set()

    def set_policy(self, policy: Policy) -> None:
        self._policy = policy
        self._dirty.set()

    async def run(self) -> None:
        if self._catalog is not None:
            self._dirty.set()  # a restart after a failure rebuilds from what it already holds
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._debounce()
            self.rebuild()

    async def _debounce(self) -> None:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._debounce_max
        while (left := give_up_at - loop.time()) > 0:
            try:
                await asyncio.wait_for(self._dirty.wait(), min(self._debounce_after, left))
            except TimeoutError:
                return  # quiet
            self._dirty.clear()

    def rebuild(self) -> None:
        if self._catalog is None:
            return  # nothing to serve before the first catalog
        policy = self._policy
        policy_changed = policy != self._translated_policy
        current = {ServiceKey(name, self.namespace): endpoints for name, endpoints in self._catalog.services.items()}
        updates: dict[ServiceKey, ServiceModel | None] = {}
        for service, endpoints in current.items():
            if not policy_changed and self._inputs.get(service) == endpoints and service not in self.failures:
                continue
            if service in self.failures and self._inputs.get(service) == endpoints and not policy_changed:
                continue  # the same inputs fail the same way
            self._inputs[service] = endpoints
            try:
                updates[service] = translate_service(service, endpoints, policy)
            except Exception as error:  # noqa: BLE001 - TranslationError, or a bug: either way only this service
                self._failed(service, error)
                continue
            if self.failures.pop(service, None) is not None:
                log.info("translation of %s works again", service.fqdn, extra={"service": service.fqdn})
        for service in self._inputs.keys() - current.keys():
            del self._inputs[service]
            updates[service] = None
            if self.failures.pop(service, None) is not None:
                log.info("%s left the catalog; its translation failure is gone with it", service.fqdn)
        self._translated_policy = policy
        changed = self.store.apply(updates, policy)
        self.rebuilds += 1
        self._on_rebuilt()
        if changed:
            log.info("resources rebuilt: generation %d, %d resources, %d services changed",
                     self.store.generation, len(self.store), len(changed))
            self._on_change()

    def _failed(self, service: ServiceKey, error: Exception) -> None:
        reason = str(error) if isinstance(error, TranslationError) else f"{type(error).__name__}: {error}"
        if self.failures.get(service) != reason:
            log.error("translation of %s failed, its last good resources keep serving: %s", service.fqdn, reason,
                      exc_info=not isinstance(error, TranslationError),
                      extra={"service": service.fqdn, "reason": reason})
        self.failures[service] = reason
