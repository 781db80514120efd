"""The gateway's per-client token bucket (services/gateway/ratelimit.py), on a fake clock."""

from __future__ import annotations

import pytest

from services.gateway.ratelimit import RateLimiter, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_gets_its_burst_then_waits_for_the_rate():
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)  # one token per 0.5 s
    clock.now += 0.25
    assert limiter.take("a") == pytest.approx(0.25)  # a refused call takes nothing
    clock.now += 0.25
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0


def test_clients_have_their_own_buckets_and_an_idle_one_refills_only_to_the_burst():
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=2, clock=clock)
    assert limiter.take("a") == limiter.take("a") == 0.0 and limiter.take("a") > 0
    assert limiter.take("b") == 0.0  # b is not a
    clock.now += 3600
    assert [limiter.take("a") for _ in range(3)][2] > 0  # an hour idle: still only 2


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one():
    assert [retry_after(w) for w in (0.001, 0.5, 1.0, 1.01, 2.5)] == [1, 1, 1, 2, 3]


def test_memory_is_bounded_by_forgetting_full_buckets_first_then_the_oldest():
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=1, clock=clock, max_clients=3)
    for client in ("a", "b", "c"):
        limiter.take(client)
        clock.now += 0.1
    limiter.take("d")  # all three still draining: the oldest (a) goes
    assert len(limiter) == 3 and limiter.take("b") > 0 and limiter.take("a") == 0.0
    clock.now += 10  # all full again
    limiter.take("e")
    assert len(limiter) == 1


def test_nonsense_limits_are_refused():
    with pytest.raises(ValueError):
        RateLimiter(rate=0, burst=1)
    with pytest.raises(ValueError):
        RateLimiter(rate=1, burst=0)
