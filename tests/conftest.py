"""Fixtures shared by every test suite; the helpers themselves live in tests/support (see its
docstring). A failing test gets the log tails of the processes and Consul agents it started."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # `import support` from any test directory

from support.consul import ConsulAgent
from support.procs import Processes
from support.reports import add_failure_report, pytest_runtest_makereport  # noqa: F401 - the hook


@pytest.fixture
def procs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Processes]:
    """Processes started by this test, logging under tmp_path/logs, stopped by PID at teardown."""
    processes = Processes(tmp_path / "logs")
    add_failure_report(request, processes.report)
    yield processes
    processes.stop_all()


@pytest.fixture
def consul_agent(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConsulAgent]:
    """A started `consul agent -dev` of this test's own, on free ports; stopped at teardown."""
    agent = ConsulAgent(tmp_path / "consul")
    add_failure_report(request, agent.tail)
    agent.start()
    yield agent
    agent.stop()
