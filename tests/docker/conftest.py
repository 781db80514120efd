"""The Docker image tests run when a container engine answers (`docker info`), and are skipped with
the reason in pytest's summary otherwise (`tools/docker/prepare-engine` sets one up where root and
apt allow; `.ci/run` calls it). Every image is built once per session by the script `make images`
runs (tools/docker/build-images), with the base images that script reads."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from support.docker import IMAGES, ROOT, Resources, engine_answers
from support.reports import add_failure_report

BUILD_TIMEOUT = 45 * 60  # every image cold on 2 busy cores (Go modules, npm, PyPI); warm: seconds


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = [item for item in items if item.path.is_relative_to(ROOT / "tests" / "docker")]
    if not here:
        return
    reason = engine_answers()
    if reason:
        skip = pytest.mark.skip(reason=f"NO CONTAINER ENGINE: Docker image tests skipped: {reason} "
                                       "(tools/docker/prepare-engine installs and starts one where root and apt allow)")
        for item in here:
            if item.get_closest_marker("needs_no_engine") is None:
                item.add_marker(skip)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_no_engine: a tests/docker test that runs without a container engine")


@pytest.fixture(scope="session")
def built_images() -> dict[str, str]:
    """Every image, built once (tools/docker/build-images, as `make images`): name -> tag."""
    result = subprocess.run([str(ROOT / "tools" / "docker" / "build-images")], cwd=ROOT, capture_output=True,
                            text=True, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, (
        f"tools/docker/build-images failed:\n{result.stderr[-4000:]}\n(no registry reachable? "
        "tools/docker/prepare-engine makes local base images and writes .build/docker-bases.env)")
    return {name: f"polymesh/{name}:dev" for name in IMAGES}


@pytest.fixture
def resources(request: pytest.FixtureRequest) -> Iterator[Resources]:
    """Containers, networks, volumes of this test: logs shown if it fails, all removed after."""
    made = Resources()
    add_failure_report(request, made.logs)
    yield made
    made.remove()
    assert made.leftovers() == [], "left behind"
