"""Fixtures for the control-plane tests: the control plane as `python -m mesh.xds` and the probe
clients (the Go one built once per session under .build/, the Node one installed with npm ci)."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import pytest

from support.consul import ConsulAgent
from support.procs import Processes
from support.xds import REPO, ControlPlane, start_control_plane as start

PROBES = Path(__file__).parent / "probes"
BUILD = REPO / ".build"


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
    binary = BUILD / "xds-probe-go"
    BUILD.mkdir(exist_ok=True)
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=PROBES / "go", check=True,
                   env={**os.environ, "GOFLAGS": "-mod=readonly"})
    return binary


@pytest.fixture(scope="session")
def node_probe() -> Path:
    """The Node probe script; `npm ci` runs when node_modules is missing or older than the lock."""
    directory = PROBES / "node"
    installed = directory / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < (directory / "package-lock.json").stat().st_mtime:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=directory, check=True)
    return directory / "probe.js"


@pytest.fixture(scope="session")
def python_probe() -> Path:
    return PROBES / "python" / "probe.py"


@pytest.fixture(scope="session")
def python_xds_server() -> Path:
    return PROBES / "python" / "xds_server.py"
