"""Circuit breaking through the running mesh: a replica of the upstream started by the test takes
1.5 s per call (MESH_INJECT_DELAY_MS), alone in subset `slow`, whose DestinationRule policy has
`connectionPool.http.http2MaxRequests: 3` (gRPC's circuit breaker max_requests); a VirtualService
sends every call there. Ten calls at once: three reach the replica and succeed after 1.5 s; those
beyond the limit fail at once with UNAVAILABLE (or RESOURCE_EXHAUSTED) instead of queueing, and the
replica never has more than three calls in flight (its own channelz, sampled). One call goes
first, alone, so that the burst finds a connection to the replica.

Orders (Python) runs the PlaceOrder requests whose ids share one of its 64 lock stripes one after
the other, so a call may wait there for another (1.5 s) before orders calls pricing at all: each
call's time is counted from when orders took it up (`Driver.queued`), and a call that waited
there may be served once a slot is free again."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from support.csds import wait_cluster, wait_endpoint
from support.istio_files import destination, destination_rule, tag
from support.replicas import start_replica
from support.traffic import apply_routes, codes, driver, istio_files, make_figures  # noqa: F401

LIMIT = 3
CONCURRENT = 10
DELAY = 1.5  # seconds per call at the replica

figures = make_figures("circuit breaker")


def test_calls_beyond_the_limit_fail_fast_instead_of_queueing(procs, driver, istio_files, mesh, figures):
    up, t = driver.upstream, tag()
    policy = {"connectionPool": {"http": {"http2MaxRequests": LIMIT}}}
    istio_files.write(f"{up}.yaml", destination_rule(up, {"slow": {"labels": {"version": "slow"}, "trafficPolicy": policy}}))
    replica = start_replica(procs, mesh, up, "slow", {"MESH_INJECT_DELAY_MS": str(int(DELAY * 1000))})
    apply_routes(driver, istio_files, {"name": f"breaker-{t}", "route": [destination(up, "slow")], "retries": {"attempts": 0}})
    wait_cluster(driver.client_admin, driver.cluster("slow"),
                 lambda c: [x.max_requests.value for x in c.circuit_breakers.thresholds] == [LIMIT],
                 what=f"with a circuit breaker of {LIMIT}")
    wait_endpoint(driver.client_admin, driver.cluster("slow"), replica.port)
    # One call first, so that the burst measures the breaker and not the first connection: istiod
    # pushes every server its listener again on any change (ours only when it changed), and a grpcio
    # server then drops the handshakes in progress; the Go client retries after its backoff (~1 s).
    warm = driver.call(timeout=10.0)
    assert warm.upstream_ok, f"the first call through the slow subset failed: {warm.code} {warm.details}"

    in_flight, done = [], threading.Event()

    def sample() -> None:
        while not done.is_set():
            in_flight.append(replica.calls().in_flight)
            done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    before = replica.calls()
    start = threading.Barrier(CONCURRENT)

    def together(_):
        start.wait()
        return driver.call(timeout=10.0)

    sampler.start()
    with ThreadPoolExecutor(CONCURRENT) as pool:
        outcomes = list(pool.map(together, range(CONCURRENT)))
    done.set()
    sampler.join()
    at_replica = replica.calls() - before

    queued = driver.queued(outcomes)
    own = {id(o): o.seconds - q for o, q in zip(outcomes, queued, strict=True)}  # from when the driven service took it up
    served = [o for o in outcomes if o.upstream_ok]
    rejected = [o for o in outcomes if o.upstream_failed or o.code == "RESOURCE_EXHAUSTED"]
    fast = [o for o in rejected if own[id(o)] < DELAY / 2]
    waited = sum(q >= DELAY / 2 for q in queued)  # in orders' lock stripes, before any call to pricing
    print(figures.add(driver.language, client=f"{driver.client_service}->{up}", limit=LIMIT, concurrent=CONCURRENT,
                      served=len(served), rejected_fast=len(fast), max_in_flight_at_replica=max(in_flight, default=0),
                      slowest_rejection_ms=round(1000 * max((own[id(o)] for o in rejected), default=0)),
                      served_ms=sorted(round(1000 * own[id(o)]) for o in served),
                      waited_in_client_service=waited, answers=codes(outcomes)))

    assert len(served) + len(rejected) == CONCURRENT, f"unexpected answers: {codes(outcomes)}"
    assert all(DELAY <= own[id(o)] < 1.5 * DELAY for o in served), \
        f"served calls took {sorted(round(own[id(o)], 2) for o in served)} s: the replica takes {DELAY} s per call, " \
        "and a call waiting for a free slot would take longer"
    assert max(in_flight) <= LIMIT, f"the replica had {max(in_flight)} calls in flight; the limit is {LIMIT}"
    assert at_replica.started == len(served) and at_replica.failed == 0, \
        f"the replica started {at_replica.started} calls for {len(served)} served"
    assert LIMIT <= len(served) <= LIMIT + waited, f"{len(served)} calls served; the limit is {LIMIT}"
    assert len(fast) == len(rejected) >= CONCURRENT - LIMIT - waited, \
        f"{len(fast)} of {len(rejected)} rejections came within {DELAY / 2} s " \
        f"({sorted(round(own[id(o)], 2) for o in rejected)} s)"
