"""Fixtures and helpers of the traffic tests (tests/e2e/test_traffic_*.py): a test module imports
the fixtures it uses (`from support.traffic import driver, istio_files, make_figures`).

- `driver` (parametrized over the three client languages): `support.drivers.Driver` of this mesh.
- `istio_files`: `support.istio_files.IstioFiles`, restored at teardown.
- `make_figures(feature)`: a module fixture recording figures, printing the module's table at its end.
- `apply_routes(driver, files, *http)`: write the VirtualService of the driver's upstream and wait
  until the client under test has taken it (CSDS).
- `counts_by(driver, before, after)`: channelz deltas of calls started, per instance.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Mapping

import pytest

from support.channelz import ServerCalls
from support.csds import wait_route_names
from support.drivers import LANGUAGES, Driver, Outcome, make_driver
from support.figures import Figures
from support.istio_files import IstioFiles, virtual_service
from support.poll import poll_until

__all__ = ["apply_routes", "codes", "counts_by", "driver", "istio_files", "make_figures", "percent", "print_table"]


@pytest.fixture(params=LANGUAGES)
def driver(request: pytest.FixtureRequest, mesh) -> Driver:
    """The client language's driver, once a call through it succeeds (a client resolves its
    upstream on its first call: before that its CSDS holds nothing to wait for). Each try has 1 s:
    a call that starts while the previous test's routes are being restored can be held to its
    deadline by the route it started on (measured: 5 s, the whole deadline, then the next try OK)."""
    made = make_driver(mesh, request.param)
    poll_until(lambda: made.call(timeout=1).upstream_ok, 20, 0.2, f"a call through {made.client_service} to {made.upstream}")
    return made


@pytest.fixture
def istio_files(mesh) -> Iterator[IstioFiles]:
    files = IstioFiles(mesh)
    yield files
    files.restore()


def print_table(config: pytest.Config, text: str) -> None:
    """Print past pytest's output capture (the module's table at its end)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        print(text)
        return
    with capture.global_and_fixture_disabled():
        print("\n" + text)


def make_figures(feature: str):
    @pytest.fixture(scope="module")
    def figures(request: pytest.FixtureRequest, mesh) -> Iterator[Figures]:
        recorded = Figures(feature, mesh.run_dir)
        yield recorded
        if recorded.rows:
            print_table(request.config, recorded.table() + f"\n(JSON: {', '.join(map(str, recorded.paths))})")
    return figures


def apply_routes(driver: Driver, files: IstioFiles, *http: dict, timeout: float = 10.0) -> None:
    """The upstream's VirtualService with these `http` routes (each with a unique `name`), in
    force at the client under test when this returns."""
    files.write(f"traffic-test-{driver.upstream}.yaml", virtual_service(driver.upstream, *http))
    wait_route_names(driver.client_admin, driver.cluster(), {h["name"] for h in http}, timeout, files.complaints)


def counts_by(before: Mapping[str, ServerCalls], after: Mapping[str, ServerCalls]) -> dict[str, int]:
    """instance -> calls started between the two snapshots."""
    return {name: after[name].started - before.get(name, ServerCalls()).started for name in after}


def codes(outcomes: list[Outcome]) -> dict[str, int]:
    return dict(collections.Counter(o.code for o in outcomes))


def percent(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0
