"""An invalid edit leaves the previous behaviour in force: a good VirtualService sends every call
to v1 (weights 100/0); an edit whose weights sum to 110 is rejected by the control plane (its
`mesh.xds.policy` health goes NOT_SERVING and its log names the file and the sum), and the
client under test keeps the good routes: every call still goes to v1. Then a good edit (0/100)
applies: every call goes to v2, and the policy health is SERVING again."""

from __future__ import annotations

from support.csds import route_names
from support.istio_files import destination, tag, virtual_service
from support.poll import poll_until
from support.traffic import apply_routes, codes, counts_by, driver, istio_files, make_figures  # noqa: F401

CALLS = 200

figures = make_figures("invalid edit")


def served_by_version(driver, calls: int = CALLS) -> dict[str, int]:
    before = driver.upstream_calls()
    outcomes = driver.run(calls)
    assert all(o.upstream_ok for o in outcomes), f"calls failed: {codes(outcomes)}"
    counts = counts_by(before, driver.upstream_calls())
    return {v: sum(n for name, n in counts.items() if driver.version_of(name) == v) for v in ("v1", "v2")}


def weighted(up: str, name: str, v1: int, v2: int) -> dict:
    return {"name": name, "route": [destination(up, "v1", v1), destination(up, "v2", v2)]}


def test_an_invalid_edit_leaves_the_previous_routes_in_force_until_a_good_one(driver, istio_files, figures):
    up, t = driver.upstream, tag()
    file = f"traffic-test-{up}.yaml"
    good, bad, fixed = f"good-{t}", f"bad-{t}", f"fixed-{t}"
    apply_routes(driver, istio_files, weighted(up, good, 100, 0))
    poll_until(lambda: istio_files.policy_health() == "SERVING", 5, 0.05, "policy health SERVING")
    at_first = served_by_version(driver)

    mark = istio_files.log_mark()
    istio_files.write(file, virtual_service(up, weighted(up, bad, 100, 10)))
    rejection = poll_until(lambda: [m for m in istio_files.rejections(file, mark) if "sum to 110" in m], 5, 0.05,
                           f"the control plane's rejection of {file}")
    health_while_bad = istio_files.policy_health()
    routes_while_bad = route_names(driver.client_admin, driver.cluster())
    while_bad = served_by_version(driver)

    apply_routes(driver, istio_files, weighted(up, fixed, 0, 100))
    poll_until(lambda: istio_files.policy_health() == "SERVING", 5, 0.05, "the policy health SERVING after the fix")
    health_after_fix = istio_files.policy_health()
    after_fix = served_by_version(driver)

    print(figures.add(driver.language, client=f"{driver.client_service}->{up}", calls_per_phase=CALLS,
                      good_100_0=f"v1:{at_first['v1']}", invalid_110=f"v1:{while_bad['v1']}",
                      fixed_0_100=f"v2:{after_fix['v2']}", policy_health_while_invalid=health_while_bad))

    assert at_first == {"v1": CALLS, "v2": 0}, at_first
    assert rejection, istio_files.complaints()
    assert health_while_bad == "NOT_SERVING"
    assert routes_while_bad == {good}, f"the client holds routes {routes_while_bad} while the edit is invalid"
    assert while_bad == {"v1": CALLS, "v2": 0}, f"with the invalid edit in the folder: {while_bad}"
    assert health_after_fix == "SERVING"
    assert after_fix == {"v1": 0, "v2": CALLS}, f"after the fix: {after_fix}"
