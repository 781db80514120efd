"""Outlier detection through the running mesh: a replica of the upstream started by the test with
MESH_INJECT_FAILURE_PERCENT=100 joins subset v1 (its version label is v1) beside the upstream's
own v1 instance; a VirtualService sends every call to v1, and the DestinationRule's
outlierDetection (interval 1 s, 5 errors) is gRPC failure-percentage ejection (mesh/xds/traffic.py).
Under steady traffic the client must eject the replica within two intervals of the first call it
sent there: the replica's own server (channelz) stops counting calls, while the healthy instance
keeps taking them and the driven service's caller sees no more errors.

istiod sends proxyless clients no outlier detection (its gRPC generator translates a
DestinationRule's TLS, load balancer and connectionPool.http.http2MaxRequests only): the ejection
test is skipped there, and the last test shows what each control plane sends. Outlier ejection is
ours alone (README "Run under real istiod")."""

from __future__ import annotations

import time

import pytest

from support.csds import wait_cluster, wait_endpoint
from support.istio_files import destination, destination_rule, tag
from support.replicas import start_replica
from support.traffic import apply_routes, codes, driver, istio_files, make_figures  # noqa: F401

INTERVAL = 1.0  # seconds
QUIET = 3 * INTERVAL  # how long the replica must take no call after its last one
GIVE_UP = 15.0  # seconds of traffic at most
SAMPLE_EVERY = 0.02
CONCURRENCY = 4
OUTLIER_DETECTION = {"consecutive5xxErrors": 5, "interval": f"{round(INTERVAL * 1000)}ms", "baseEjectionTime": "1m",
                     "maxEjectionPercent": 50}

figures = make_figures("outlier ejection")


def test_a_failing_replica_is_ejected_within_two_intervals(procs, driver, istio_files, mesh, figures):
    if istio_files.istiod:
        pytest.skip("istiod sends proxyless clients no outlier detection (see the next test); ours does")
    up, t = driver.upstream, tag()
    healthy = next(p for p in driver.upstream_instances() if p.version == "v1")
    replica = start_replica(procs, mesh, up, "v1", {"MESH_INJECT_FAILURE_PERCENT": "100"})
    istio_files.write(f"{up}.yaml", destination_rule(up, traffic_policy={"outlierDetection": OUTLIER_DETECTION}))
    apply_routes(driver, istio_files, {"name": f"outlier-{t}", "route": [destination(up, "v1")], "retries": {"attempts": 0}})
    wait_cluster(driver.client_admin, driver.cluster("v1"), lambda c: c.HasField("outlier_detection"),
                 what="with outlier detection")
    wait_endpoint(driver.client_admin, driver.cluster("v1"), replica.port)

    def healthy_count() -> int:
        return driver.upstream_calls()[healthy.name].started

    start = previous = replica.calls().started
    first = last = None  # monotonic times of the samples where the replica's count first and last grew
    healthy_at_last = healthy_at_end = 0
    with driver.background(CONCURRENCY) as outcomes:
        began = time.monotonic()
        while time.monotonic() - began < GIVE_UP:
            now, count = time.monotonic(), replica.calls().started
            if count > previous:
                first, last, previous, healthy_at_last = first or now, now, count, healthy_count()
            if last is not None and now - last >= QUIET:
                healthy_at_end = healthy_count()
                break
            time.sleep(SAMPLE_EVERY)  # the counter's sampling period, not a wait for an outcome
    calls = list(outcomes)

    reached = previous - start
    ejected = bool(healthy_at_end)  # the loop saw QUIET seconds without a call to the replica
    ejected_after = round(last - first, 2) if ejected else None
    errors = [o for o in calls if not o.upstream_ok]
    late_errors = [o for o in errors if last is not None and o.ended > last + 0.2]
    print(figures.add(driver.language, client=f"{driver.client_service}->{up}", interval_s=INTERVAL,
                      ejected_after_s=ejected_after, calls_to_replica=reached, calls=len(calls),
                      errors_before_ejection=len(errors) - len(late_errors), errors_after=len(late_errors),
                      healthy_calls_while_quiet=healthy_at_end - healthy_at_last if ejected else None))

    assert first is not None, f"no call reached the replica in {GIVE_UP} s ({codes(calls)})"
    assert ejected, f"the replica still took calls after {GIVE_UP} s of traffic ({reached} calls): never ejected"
    assert ejected_after <= 2 * INTERVAL, \
        f"the replica took calls for {ejected_after} s ({reached} calls); ejection must come within {2 * INTERVAL} s"
    assert all(o.upstream_failed for o in errors), f"unexpected answers: {codes(calls)}"
    assert errors, "the replica failed no call: the test proved nothing"
    assert not late_errors, f"{len(late_errors)} errors after the replica's last call"
    assert healthy_at_end > healthy_at_last, f"no call reached {healthy.name} in the {QUIET} s after the ejection"


def test_the_outlier_policy_reaches_the_client_from_our_control_plane_only(driver, istio_files, figures):
    """One DestinationRule with outlierDetection and connectionPool.http.http2MaxRequests: both
    control planes send the client the circuit breaker (max_requests); only ours sends the
    outlier detection."""
    up, max_requests = driver.upstream, 77
    istio_files.write(f"{up}.yaml", destination_rule(up, traffic_policy={
        "outlierDetection": OUTLIER_DETECTION, "connectionPool": {"http": {"http2MaxRequests": max_requests}}}))
    cluster = wait_cluster(driver.client_admin, driver.cluster(),  # the service's own cluster: routed to now
                           lambda c: any(t.max_requests.value == max_requests for t in c.circuit_breakers.thresholds),
                           what=f"with max_requests {max_requests}")
    sent = cluster.HasField("outlier_detection")
    control_plane = "istiod" if istio_files.istiod else "ours"
    print(figures.add(driver.language, client=f"{driver.client_service}->{up}", control_plane=control_plane,
                      circuit_breaker=f"max_requests {max_requests}", outlier_detection_sent=sent))

    assert sent == (control_plane == "ours"), \
        f"{control_plane} {'sent' if sent else 'did not send'} outlier detection: {cluster.outlier_detection}"
