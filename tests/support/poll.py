"""Wait for a condition by polling it, never by sleeping a guessed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["apoll_until", "poll_until"]

T = TypeVar("T")


def poll_until(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, message: str = "") -> T:
    """Call `condition()` until it returns something truthy and return that.

    Exceptions raised by `condition` count as "not yet"; on timeout an AssertionError names
    `message` (or the condition) and the last exception or value seen.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = condition()
            if value:
                return value
            last = value
        except Exception as error:  # noqa: BLE001 - "not yet", reported on timeout
            last = error
        if time.monotonic() >= deadline:
            what = message or getattr(condition, "__name__", repr(condition))
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


async def apoll_until(
    condition: Callable[[], Awaitable[T] | T], timeout: float = 10.0, interval: float = 0.05, message: str = ""
) -> T:
    """`poll_until` for asyncio code; `condition` may be sync or async."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = condition()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            last = value
        except Exception as error:  # noqa: BLE001
            last = error
        if time.monotonic() >= deadline:
            what = message or getattr(condition, "__name__", repr(condition))
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)
