"""Supervision of the control plane's background tasks, and the health that follows from it.

`Supervisor.run(name, start)` runs `start()` until it is cancelled: if it raises, the failure is
logged with its reason, the task is marked failing, and it is started again after a backoff
(doubling up to a limit). The task says it has recovered by calling `supervisor.healthy(name)`
(the Consul watcher after its first complete catalog, the reconciler after a rebuild). Meanwhile
whatever was last published keeps serving: nothing here touches the resources.

`Health` turns that into grpc.health.v1 statuses: "" and the ADS service are SERVING once the
first catalog has been published and while no supervised task is failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from grpc_health.v1 import health, health_pb2

__all__ = ["BACKOFF_MAX", "BACKOFF_MIN", "Health", "Supervisor"]

log = logging.getLogger(__name__)

BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0  # seconds before a failed task starts again


class Health:
    """Sets the statuses of `names` from three facts: published at least once, tasks failing,
    and (for `translation_name`) services whose translation fails; `policy_name` from the Istio
    resources rejected."""

    def __init__(self, servicer: health.aio.HealthServicer, names: Iterable[str], translation_name: str,
                 policy_name: str | None = None) -> None:
        self._servicer = servicer
        self._names = tuple(names)
        self._translation_name = translation_name
        self._policy_name = policy_name
        self.policy_rejections = 0  # Istio resources rejected (their last good versions serve)
        self.published = False
        self.failing: dict[str, str] = {}  # task name -> reason
        self.translation_failures = 0
        self._shown: dict[str, int] = {}

    async def update(self) -> None:
        serving = self.published and not self.failing
        wanted = {name: serving for name in self._names}
        wanted[self._translation_name] = self.published and not self.translation_failures
        if self._policy_name is not None:
            wanted[self._policy_name] = not self.policy_rejections
        for name, ok in wanted.items():
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            if self._shown.get(name) != status:
                self._shown[name] = status
                await self._servicer.set(name, status)


class Supervisor:
    def __init__(self, on_health_change: Callable[[], Coroutine[Any, Any, None]], failing: dict[str, str],
                 backoff_min: float = BACKOFF_MIN, backoff_max: float = BACKOFF_MAX) -> None:
        self._on_health_change = on_health_change
        self._failing = failing
        self._backoff_min, self._backoff_max = backoff_min, backoff_max
        self._pending: set[asyncio.Task[None]] = set()
        self._backoff: dict[str, float] = {}  # task name -> the next pause; reset once it recovers

    def healthy(self, name: str) -> None:
        self._backoff.pop(name, None)
        if self._failing.pop(name, None) is not None:
            log.info("%s recovered", name, extra={"task": name})
            self.health_changed()

    def health_changed(self) -> None:
        """Schedule a health update (callable from synchronous code)."""
        task = asyncio.get_running_loop().create_task(self._on_health_change())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def run(self, name: str, start: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await start()
                reason = "ended unexpectedly"
            except asyncio.CancelledError:
                raise
            except Exception as error:  # whatever it was, log it and start again
                reason = f"{type(error).__name__}: {error}"
                backoff = self._backoff.get(name, self._backoff_min)
                log.error("%s failed, the last published resources keep serving; retrying in %.1f s: %s",
                          name, backoff, reason, exc_info=True, extra={"task": name, "reason": reason})
            backoff = self._backoff.get(name, self._backoff_min)
            if reason == "ended unexpectedly":
                log.error("%s %s; retrying in %.1f s", name, reason, backoff, extra={"task": name})
            self._failing[name] = reason
            self.health_changed()
            self._backoff[name] = min(backoff * 2, self._backoff_max)
            await asyncio.sleep(backoff)
