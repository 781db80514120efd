"""Per-client rate limiting: a token bucket per client (the token's subject when the request is
authenticated, else the remote address), `rate` tokens a second up to `burst`.

    limiter = RateLimiter(rate=200, burst=400)
    wait = limiter.take("alice")        # 0.0: go ahead; else seconds until the next token
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["RateLimiter", "retry_after"]

MAX_CLIENTS = 100_000  # buckets kept; beyond it full (idle) buckets are dropped, then the oldest


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class RateLimiter:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = MAX_CLIENTS) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate {rate} must be > 0 and burst {burst} at least 1")
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: dict[str, _Bucket] = {}

    def _refilled(self, bucket: _Bucket, now: float) -> float:
        return min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)

    def take(self, client: str) -> float:
        """Take one token for `client`: 0.0 when it had one, else the seconds until it has one
        (nothing is taken then)."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self._max_clients:
                self._evict(now)
            bucket = self._buckets[client] = _Bucket(self.burst, now)
        bucket.tokens, bucket.updated = self._refilled(bucket, now), now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def _evict(self, now: float) -> None:
        """Forget the clients whose bucket is full again (forgetting them changes nothing); if
        every one is still draining, the one seen longest ago."""
        full = [client for client, bucket in self._buckets.items() if self._refilled(bucket, now) >= self.burst]
        for client in full:
            del self._buckets[client]
        if not full:
            oldest = min(self._buckets, key=lambda client: self._buckets[client].updated)
            del self._buckets[oldest]

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(wait: float) -> int:
    """The `Retry-After` header's whole seconds: never less than the wait, at least 1."""
    return max(1, math.ceil(wait))
