"""The defaults each image carries (services/NAME/Dockerfile, mesh/xds/Dockerfile) are the topology's
(mesh/runner/topology.py), so that `docker run polymesh/NAME:dev` alone listens, and its HEALTHCHECK
calls, where the rest of the mesh expects it. The compose file and the Kubernetes manifests set every
variable anyway; this keeps the images' own defaults from drifting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mesh.runner import topology

ROOT = Path(__file__).resolve().parents[2]


def settings(dockerfile: Path) -> tuple[dict[str, str], set[int]]:
    """(ENV of the final stage, EXPOSEd ports) as the Dockerfile declares them (continued lines joined)."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    final = text.split("\nFROM ")[-1]
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", final, re.M):
        env.update(re.findall(r"(\w+)=(\S+)", line))
    exposed = {int(p) for line in re.findall(r"^EXPOSE (.+)$", final, re.M) for p in line.split()}
    return env, exposed


@pytest.mark.parametrize("service", topology.SERVICES, ids=lambda s: s.name)
def test_each_service_image_defaults_to_the_topologys_ports(service: topology.Service) -> None:
    env, exposed = settings(ROOT / "services" / service.name / "Dockerfile")
    first = service.instances[0]
    assert (env["OTEL_SERVICE_NAME"], int(env["MESH_PORT"]), int(env["MESH_ADMIN_PORT"])) == \
        (service.name, first.port, first.admin_port)
    assert exposed == {first.port, first.admin_port}


def test_the_control_plane_image_defaults_to_the_topologys_xds_port() -> None:
    env, exposed = settings(ROOT / "mesh" / "xds" / "Dockerfile")
    assert int(env["MESH_XDS_PORT"]) == topology.BASE_PORTS["xds"]
    assert exposed == {topology.BASE_PORTS["xds"]}
