"""Route timeouts through the running mesh: a replica of the upstream started by the test takes
3 s per call (MESH_INJECT_DELAY_MS), alone in subset `slow`; the VirtualService route there has
`timeout: 1s`. The client's call must end at 1 s (DEADLINE_EXCEEDED, which the driven service
answers as its upstream being unavailable, or passes on), within 10 %, although the test's own
deadline is 10 s. Calls go one at a time: each measures the timeout alone (orders serializes
requests whose ids share a lock stripe, which concurrent calls would add).

A slow server, not a VirtualService fault delay: grpc-go starts the route's max_stream_duration
after the fault filter's delay (as Envoy's router starts its timeout after the fault filter), so a
route timeout shorter than a fault delay never fires in Go (measured: 3.005 s and OK with timeout
1s and fixedDelay 3s), while grpc-js counts the delay in it (1.00 s).

Python (orders): grpcio fires `max_stream_duration` too early, so the control plane sends a C-core
client the timeout in RouteAction.timeout only, and the Python runtime is to apply it as the
call's own deadline (mesh/xds/traffic.py); until it does, orders waits out the whole delay.
Under istiod a Python client's route timeouts fire at once: istiod sends every proxyless client the
timeout as `max_stream_duration` (it does not know the client's language), which grpcio fires
1.1-1.9 s early. That row is a strict xfail: it passes the day grpcio is fixed, and says so."""

from __future__ import annotations

import pytest

from mesh.runner import topology
from support.csds import wait_endpoint
from support.istio_files import destination, destination_rule, tag
from support.replicas import start_replica
from support.traffic import apply_routes, codes, driver, istio_files, make_figures  # noqa: F401

TIMEOUT = 1.0  # seconds, the route's
DELAY = 3.0  # seconds the replica takes per call: longer than the timeout
CALLS = 5
TOLERANCE = 0.10  # of the timeout

figures = make_figures("route timeout")


def test_a_route_timeout_fires_within_10_percent_of_its_value(procs, driver, istio_files, mesh, figures, request):
    if driver.language == "python" and topology.control_plane_from_env() == "istiod":
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "istiod sends the route timeout as max_stream_duration, which grpcio fires 1.1-1.9 s early "
            "(grpc/grpc#34547); ours sends it to a C-core client as RouteAction.timeout only")))
    up = driver.upstream
    istio_files.write(f"{up}.yaml", destination_rule(up, {"slow": {"labels": {"version": "slow"}}}))
    replica = start_replica(procs, mesh, up, "slow", {"MESH_INJECT_DELAY_MS": str(int(DELAY * 1000))})
    apply_routes(driver, istio_files, {"name": f"timeout-{tag()}", "route": [destination(up, "slow")],
                                       "timeout": f"{round(TIMEOUT * 1000)}ms", "retries": {"attempts": 0}})
    wait_endpoint(driver.client_admin, driver.cluster("slow"), replica.port)
    before = replica.calls()
    outcomes = driver.run(CALLS, concurrency=1, timeout=10.0)
    at_replica = replica.calls() - before
    seconds = sorted(round(o.seconds, 3) for o in outcomes)
    print(figures.add(driver.language, client=f"{driver.client_service}->{up}", route_timeout_s=TIMEOUT,
                      replica_delay_s=DELAY, calls=CALLS, ended_after_s=seconds, answers=codes(outcomes)))

    assert at_replica.started == CALLS, f"the slow replica started {at_replica.started} of {CALLS} calls"
    assert all(o.upstream_failed for o in outcomes), f"each call must fail its upstream call: {codes(outcomes)}"
    assert all(abs(s - TIMEOUT) <= TOLERANCE * TIMEOUT for s in seconds), \
        f"calls ended after {seconds} s; the route timeout is {TIMEOUT} s (+-{int(TOLERANCE * 100)} %)"
