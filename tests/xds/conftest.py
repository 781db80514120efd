"""Fixtures for the control-plane tests: the control plane as `python -m mesh.xds` and the probe
clients (the Go one built once per session under .build/, the Node one installed with npm ci)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from support.consul import ConsulAgent
from support.procs import Processes
from support.xds import ControlPlane
from support.xds import start_control_plane as start
from support.xds_probes import PROBES, PYTHON_PROBE, build_go_certwatch, build_go_probe, install_node_probe


@pytest.fixture
def start_control_plane(procs: Processes):
    """start_control_plane(consul_http_addr, port=None, wait=True, name="xds") -> ControlPlane."""
    return functools.partial(start, procs)


@pytest.fixture
def control_plane(consul_agent: ConsulAgent, procs: Processes) -> ControlPlane:
    return start(procs, consul_agent.http_addr)


@pytest.fixture(scope="session")
def go_probe() -> Path:
    """The Go probe binary (`go build` is incremental: quick once built)."""
    return build_go_probe()


@pytest.fixture(scope="session")
def go_certwatch() -> Path:
    """grpc-go's pemfile (file_watcher) provider watching one instance's certificate files."""
    return build_go_certwatch()


@pytest.fixture(scope="session")
def node_probe() -> Path:
    """The Node probe script; `npm ci` runs when node_modules is missing or older than the lock."""
    return install_node_probe()


@pytest.fixture(scope="session")
def python_probe() -> Path:
    return PYTHON_PROBE


@pytest.fixture(scope="session")
def python_xds_server() -> Path:
    return PROBES / "python" / "xds_server.py"
