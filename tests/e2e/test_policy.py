"""Istio policy through the running mesh: a scenario file dropped into the control plane's folder
changes where the gateway's calls go, with no restart, and taking it away restores the default."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from mesh.runner import topology
from mesh.runner.topology import ROOT
from support.poll import poll_until

SCENARIO = ROOT / "istio" / "scenarios" / "beta-header" / "beta-header.yaml"
CALLS = 20


def pricing_versions(http, headers: dict[str, str] | None = None, calls: int = CALLS) -> list[str]:
    versions = []
    for _ in range(calls):
        reply = http.get("/v1/products/sku-grinder", params={"currency": "EUR"}, headers=headers or {})
        assert reply.status_code == 200, reply.text
        versions.append(reply.json()["pricingVersion"])
    return versions


def test_the_beta_header_scenario_routes_the_gateways_calls_and_goes_away_cleanly(http, mesh):
    beta = {"x-user-tier": "beta"}
    applied = mesh.istio_dir / SCENARIO.name
    shutil.copy(SCENARIO, applied)
    try:
        poll_until(lambda: set(pricing_versions(http, beta, 5)) == {"v2"}
                   and set(pricing_versions(http, None, 5)) == {"v1"}, 10, 0.1, "the scenario in force")
        assert pricing_versions(http, beta) == ["v2"] * CALLS
        assert pricing_versions(http, {"x-user-tier": "Beta"}) == ["v1"] * CALLS  # the match is exact
        assert pricing_versions(http) == ["v1"] * CALLS
    finally:
        applied.unlink()
    # Without the VirtualService, pricing is balanced over both versions again, header or not.
    poll_until(lambda: set(pricing_versions(http, beta)) == {"v1", "v2"}, 10, 0.1, "both versions again")


@pytest.mark.skipif(topology.control_plane_from_env() == "istiod",
                    reason="make status names our control plane's rejections; istiod logs them only "
                           "(tests/e2e/test_traffic_invalid_edit.py covers both)")
def test_an_invalid_edit_is_named_by_make_status_and_keeps_the_last_good_split(http, mesh):
    beta = {"x-user-tier": "beta"}
    applied = mesh.istio_dir / SCENARIO.name
    shutil.copy(SCENARIO, applied)
    try:
        poll_until(lambda: set(pricing_versions(http, beta, 5)) == {"v2"}, 10, 0.1, "the scenario in force")
        applied.write_text(SCENARIO.read_text().replace("subset: v2", "subset: v9"))

        def reported() -> subprocess.CompletedProcess | None:
            done = mesh.runner("status", check=False)
            return done if "rejected" in done.stdout else None

        done = poll_until(reported, 10, 0.2, "make status naming the rejected resource")
        assert done.returncode == 3, done.stdout
        [line] = [line for line in done.stdout.splitlines() if "rejected" in line]
        assert f"{applied}: VirtualService default/pricing: spec.http[0].route[0].destination.subset 'v9'" in line
        assert pricing_versions(http, beta) == ["v2"] * CALLS  # the last good version serves
        applied.write_text(SCENARIO.read_text())
        poll_until(lambda: "rejected" not in mesh.runner("status", check=False).stdout, 10, 0.2, "the error cleared")
        assert mesh.runner("status", check=False).returncode == 0
    finally:
        applied.unlink()


SLOW_CATALOG = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog, namespace: default}
spec:
  hosts: [catalog.default.svc.cluster.local]
  http:
  - route:
    - destination: {host: catalog.default.svc.cluster.local}
    fault: {delay: {fixedDelay: 3s, percentage: {value: 100}}}
    timeout: 500ms
"""


def test_a_route_timeout_bounds_the_gateways_calls_too(http, mesh):
    """The gateway (Python, grpc.aio channels) applies route timeouts as its calls' deadlines, as
    the runtime's channels do: grpcio's own max_stream_duration fires early."""
    applied = mesh.istio_dir / "slow-catalog.yaml"
    applied.write_text(SLOW_CATALOG)
    try:
        def timed_out() -> float | None:
            started = time.monotonic()
            reply = http.get("/v1/products/sku-grinder", params={"currency": "EUR"})
            took = time.monotonic() - started
            return took if reply.status_code == 504 else None

        took = poll_until(timed_out, 15, 0.1, "the product page ending at the catalog route's timeout")
        # within 10% of the route timeout, plus the page's own few milliseconds on a busy machine
        assert 0.45 <= took < 0.65, f"the page took {took:.3f} s against a 0.5 s route timeout"
    finally:
        applied.unlink()
    poll_until(lambda: http.get("/v1/products/sku-grinder", params={"currency": "EUR"}).status_code == 200, 10, 0.1,
               "the page back without the route")
