"""The whole mesh, started once for the end-to-end tests with the same runner as `make up`,
in its own run folder and on its own ports (MESH_PORT_OFFSET), and stopped with `down`."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from mesh.auth.tokens import mint
from mesh.runner import consul_acl, scenarios, topology
from mesh.runner.cli import ports_in_use
from support.reports import add_failure_report
from support.tokens import bearer, run_key

ROOT = pathlib.Path(__file__).resolve().parents[2]
OFFSETS = (1000, 2000, 3000, 4000)


@dataclasses.dataclass
class Mesh:
    run_dir: pathlib.Path
    offset: int
    up_output: str
    env: dict[str, str]

    @property
    def istio_dir(self) -> pathlib.Path:
        """This mesh's copy of istio/ (tests may add scenarios to it; the control plane reloads)."""
        return self.run_dir / "istio"

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{topology.Ports(self.offset).gateway}"

    @property
    def jaeger(self) -> str:
        return f"http://127.0.0.1:{topology.Ports(self.offset).jaeger_query}"

    @property
    def consul(self) -> str:
        return f"http://127.0.0.1:{topology.Ports(self.offset).consul_http}"

    def consul_token(self, name: str) -> str:
        """The secret in the run folder's Consul token NAME (`read`, `control-plane`, a service)."""
        return consul_acl.read_token(self.run_dir, name)

    def auth(self, user: str = "e2e-user") -> dict[str, str]:
        """An Authorization header with a fresh token for `user`, minted with the run folder's key
        (as `make token` mints it)."""
        return bearer(mint(run_key(self.run_dir), user))

    def runner(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "mesh.runner", *args], env=self.env, cwd=ROOT,
            capture_output=True, text=True, timeout=180, check=check,
        )

    def ports(self) -> list[int]:
        processes = topology.build(self.run_dir, self.offset)
        ports = {p.port for p in processes} | {p.admin_port for p in processes if p.admin_port}
        return sorted(ports | {base + self.offset for base in topology.BASE_PORTS.values()})

    def log_tail(self, name: str, lines: int = 25) -> str:
        path = self.run_dir / "logs" / f"{name}.log"
        text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(no log)"]
        return f"----- {name} -----\n" + "\n".join(text)


def _offsets(run_dir: pathlib.Path) -> Iterator[int]:
    """Offsets whose ports are all free now (the runner's own test). The mesh's ports lie in the
    kernel's ephemeral range, so another test's connection may take one at any moment."""
    free = [offset for offset in OFFSETS if not ports_in_use(run_dir, offset)]
    if not free:
        pytest.fail(f"no free port layout for the test mesh among offsets {OFFSETS}")
    yield from free


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    run_dir = tmp_path_factory.mktemp("mesh-run")
    (run_dir / "istio").mkdir()
    applied = set(scenarios.applied_files(ROOT / "istio"))  # a developer's `make scenario`: not for tests
    for default in sorted(set((ROOT / "istio").glob("*.yaml")) - applied):
        shutil.copy(default, run_dir / "istio")
    for parked in (ROOT / "istio").glob("*.yaml" + scenarios.PARKED):  # a default a scenario replaces there
        shutil.copy(parked, run_dir / "istio" / parked.name.removesuffix(scenarios.PARKED))
    for offset in _offsets(run_dir):
        env = {**os.environ, "MESH_RUN_DIR": str(run_dir), "MESH_PORT_OFFSET": str(offset),
               "MESH_ISTIO_DIR": str(run_dir / "istio")}
        started = subprocess.run(
            [sys.executable, "-m", "mesh.runner", "up"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=240
        )
        mesh = Mesh(run_dir, offset, started.stdout + started.stderr, env)
        if "ports already in use" not in started.stderr:  # taken since we looked: try the next layout
            break
    if started.returncode != 0:
        mesh.runner("down", check=False)
        pytest.fail(f"the mesh did not come up:\n{mesh.up_output}")
    yield mesh
    mesh.runner("down", check=False)


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest) -> None:
    if "mesh" not in request.fixturenames:
        return
    mesh: Mesh = request.getfixturevalue("mesh")
    names = [p.name for p in topology.build(mesh.run_dir, mesh.offset)]
    add_failure_report(request, lambda: "\n".join(mesh.log_tail(name) for name in names))


@pytest.fixture
def http(mesh: Mesh) -> Iterator[httpx.Client]:
    """A client of the gateway signed in as one user (placing and reading orders need a token)."""
    with httpx.Client(base_url=mesh.gateway, timeout=30, headers=mesh.auth()) as client:
        yield client
