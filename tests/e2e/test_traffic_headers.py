"""Header routing through the running mesh: `x-user-tier: beta` goes to v2, any other value or
none to v1, exactly, call by call. The test sends the header to the service it drives (orders,
pricing, inventory); that service's runtime carries it on to the upstream call
(MESH_PROPAGATE_HEADERS, default x-user-tier: docs/runtime-contract.md), where its client routes
on it. Which version served each call is counted on the upstream instances' servers (channelz)."""

from __future__ import annotations

from support.istio_files import destination, tag
from support.poll import poll_until
from support.traffic import apply_routes, codes, counts_by, driver, istio_files, make_figures  # noqa: F401

CALLS = 100  # per header value
HEADER = "x-user-tier"
# value sent (None: no header) -> the version that must serve every one of its calls
EXPECTED = {"beta": "v2", "Beta": "v1", "beta-2": "v1", "alpha": "v1", None: "v1"}

figures = make_figures("header routing")


def test_the_beta_header_routes_to_v2_exactly_and_anything_else_to_v1(driver, istio_files, figures):
    up, t = driver.upstream, tag()
    apply_routes(driver, istio_files,
                 {"name": f"beta-{t}", "match": [{"headers": {HEADER: {"exact": "beta"}}}], "route": [destination(up, "v2")]},
                 {"name": f"rest-{t}", "route": [destination(up, "v1")]})
    # The client has ACKed the routes; grpc-js applies them to new calls a moment later (15 of the
    # first 100 beta calls went to v1 once, on a loaded machine): measure once the client routes a
    # beta call to v2 ten times in a row.
    def settled() -> bool:
        before = driver.upstream_calls()
        driver.run(10, metadata=((HEADER, "beta"),))
        counts = counts_by(before, driver.upstream_calls())
        return sum(n for name, n in counts.items() if driver.version_of(name) == "v2") == 10

    poll_until(settled, 10, 0.1, "the client routing x-user-tier: beta to v2")
    served, problems = {}, []
    for value, expected in EXPECTED.items():
        label = f"{HEADER}={value}" if value is not None else "no header"
        before = driver.upstream_calls()
        outcomes = driver.run(CALLS, metadata=((HEADER, value),) if value is not None else ())
        counts = counts_by(before, driver.upstream_calls())
        by_version = {v: sum(n for name, n in counts.items() if driver.version_of(name) == v) for v in ("v1", "v2")}
        served[label] = f"{expected}:{by_version[expected]}/{CALLS}"
        if not all(o.upstream_ok for o in outcomes):
            problems.append(f"{label}: calls failed: {codes(outcomes)}")
        if by_version[expected] != CALLS or sum(by_version.values()) != CALLS:
            problems.append(f"{label}: expected {CALLS} calls at {expected}, the upstream served {by_version}")
    print(figures.add(driver.language, client=f"{driver.client_service}->{up}", **served))
    assert not problems, "\n".join(problems)
