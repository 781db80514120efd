"""Weighted split through the running mesh: a VirtualService sends 70 % of the upstream's calls to
subset v1 and 30 % to v2 (the subsets of istio/pricing.yaml and istio/catalog.yaml), and the real
client of each language (orders -> pricing, pricing -> catalog, inventory -> catalog) keeps to
it within 5 points over 1000 calls. Which version served each call is counted on the upstream
instances' own servers (channelz)."""

from __future__ import annotations

from support.istio_files import destination, tag
from support.traffic import apply_routes, codes, counts_by, driver, istio_files, make_figures, percent  # noqa: F401

CALLS = 1000
WEIGHTS = {"v1": 70, "v2": 30}
TOLERANCE = 5  # points

figures = make_figures("weighted split")


def test_a_weighted_split_holds_within_5_points_over_1000_calls(driver, istio_files, figures):
    up = driver.upstream
    apply_routes(driver, istio_files, {"name": f"split-{tag()}",
                                       "route": [destination(up, v, w) for v, w in WEIGHTS.items()]})
    before = driver.upstream_calls()
    outcomes = driver.run(CALLS)
    counts = counts_by(before, driver.upstream_calls())
    served = {v: sum(n for name, n in counts.items() if driver.version_of(name) == v) for v in WEIGHTS}
    total = sum(served.values())
    shares = {v: percent(n, total) for v, n in served.items()}
    print(figures.add(driver.language, client=f"{driver.client_service}->{up}", calls=CALLS,
                      weights=f"{WEIGHTS['v1']}/{WEIGHTS['v2']}", served=f"{served['v1']}/{served['v2']}",
                      v2_share_pct=shares["v2"], errors=sum(not o.upstream_ok for o in outcomes)))

    assert all(o.upstream_ok for o in outcomes), f"calls whose upstream call failed: {codes(outcomes)}"
    assert total == CALLS, f"the {up} instances started {total} calls for {CALLS} ({counts})"
    for version, weight in WEIGHTS.items():
        assert abs(shares[version] - weight) <= TOLERANCE, f"{version}: {shares[version]} % for weight {weight} ({served})"
