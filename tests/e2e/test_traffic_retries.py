"""Retries through the running mesh: a replica of the upstream started by the test answers
MESH_INJECT_FAILURE_PERCENT of its business calls UNAVAILABLE (the runtime's injected failures),
alone in a subset of its own; a VirtualService routes every call there. Without retries
(`attempts: 0`) the caller of the driven service sees about that share of errors; with
`retries: {attempts: 4, retryOn: unavailable}` it sees none, and the replica's own counters show
that the failures still happened and each was retried.

Why a replica and not a VirtualService fault: an abort injected by a `fault` is not retried by the
same route's retries, in any gRPC client (nor in Envoy): measured, see the brief of these tests.
With one flaky endpoint a call fails only if all of its 5 attempts do: 0.08^5 = 3e-6 per call.

A client retries only a call the server answered Trailers-Only (gRFC A6: response headers commit
the call), so the upstream's runtime must answer its errors that way: pricing -> catalog and
inventory -> catalog retry only if a Python instance does."""

from __future__ import annotations

from support.csds import wait_endpoint
from support.istio_files import destination, destination_rule, tag
from support.poll import poll_until
from support.replicas import start_replica
from support.traffic import apply_routes, codes, driver, istio_files, make_figures, percent  # noqa: F401

CALLS = 1000  # with retries: none of them may fail
CALLS_WITHOUT = 500  # without: enough for the error rate (8 +- 5 points is 4 standard deviations)
FAILURE_PERCENT = 8
TOLERANCE = 5  # points
RETRIES = {"attempts": 4, "retryOn": "unavailable"}  # gRPC makes at most 5 attempts

figures = make_figures("retries")


def until_calls_show(driver, replica, retried: bool, batch: int = 25, timeout: float = 10.0) -> None:
    """Batches of calls until the replica shows the route's retry policy in force in the client's
    channel: a failed attempt retried (or, with `attempts: 0`, one that is not). CSDS shows a route
    as soon as the client has it, a little before its channel calls with it: measured under istiod,
    where the first of 1000 calls could still go out without retries."""
    def shown() -> bool:
        before = replica.calls()
        driver.run(batch)
        at_replica = replica.calls() - before
        return at_replica.started > batch if retried else (at_replica.failed > 0 and at_replica.started == batch)
    poll_until(shown, timeout, 0, f"calls through {driver.client_service} {'with' if retried else 'without'} retries")


def test_retries_turn_injected_unavailable_into_zero_errors(procs, driver, istio_files, mesh, figures):
    up, t = driver.upstream, tag()
    istio_files.write(f"{up}.yaml", destination_rule(up, {"flaky": {"labels": {"version": "flaky"}}}))
    replica = start_replica(procs, mesh, up, "flaky", {"MESH_INJECT_FAILURE_PERCENT": str(FAILURE_PERCENT)})

    apply_routes(driver, istio_files, {"name": f"once-{t}", "route": [destination(up, "flaky")], "retries": {"attempts": 0}})
    wait_endpoint(driver.client_admin, driver.cluster("flaky"), replica.port)
    until_calls_show(driver, replica, retried=False)
    before = replica.calls()
    without = driver.run(CALLS_WITHOUT)
    at_replica_without = replica.calls() - before

    apply_routes(driver, istio_files, {"name": f"retried-{t}", "route": [destination(up, "flaky")], "retries": RETRIES})
    until_calls_show(driver, replica, retried=True)
    before = replica.calls()
    with_retries = driver.run(CALLS)
    at_replica_with = replica.calls() - before

    errors_without = sum(o.upstream_failed for o in without)
    errors_with = sum(not o.upstream_ok for o in with_retries)
    print(figures.add(driver.language, client=f"{driver.client_service}->{up}", injected_pct=FAILURE_PERCENT,
                      calls_without=CALLS_WITHOUT, errors_without_retries_pct=percent(errors_without, CALLS_WITHOUT),
                      calls_with=CALLS,
                      errors_with_retries=errors_with, replica_failed_with_retries=at_replica_with.failed,
                      replica_attempts_with_retries=at_replica_with.started))

    assert all(o.upstream_ok or o.upstream_failed for o in without), f"unexpected answers: {codes(without)}"
    assert at_replica_without.started == CALLS_WITHOUT, \
        f"the replica started {at_replica_without.started} calls of {CALLS_WITHOUT}"
    assert abs(percent(errors_without, CALLS_WITHOUT) - FAILURE_PERCENT) <= TOLERANCE, \
        f"without retries {errors_without} of {CALLS_WITHOUT} failed; injected {FAILURE_PERCENT} % ({codes(without)})"
    assert at_replica_without.failed == errors_without, "every injected failure reaches the caller without retries"
    assert errors_with == 0, f"with retries the caller saw {codes(with_retries)}"
    assert at_replica_with.failed > 0, "no failure was injected while retries were on: the test proved nothing"
    assert at_replica_with.started == CALLS + at_replica_with.failed, \
        f"each injected failure is retried once more: {at_replica_with} for {CALLS} calls"
