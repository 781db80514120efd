"""Every image (tools/docker/build-images, `make images`): builds, runs as a non-root user, carries
no compiler, cache or test, and declares a HEALTHCHECK that makes a real grpc.health.v1 call:
unhealthy (NOT_SERVING) for an instance of each language that no control plane has configured,
although its admin port answers; healthy for the gateway (HTTP) alone, and for an instance once the
control plane image, on real Consul, has sent its listener and the mesh CA its certificate.
Every container, network and volume is removed at teardown (tests/support/docker.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mesh.auth.tokens import SigningKey
from mesh.xds import bootstrap
from support.docker import IMAGES, ROOT, Resources, bases_env, docker

PUBLIC_CONSUL_IMAGE = "hashicorp/consul:1.22.3"
# The images' own HEALTHCHECK command, checked more often than their defaults (5 s, 30 s start period;
# 0 would mean "the image's value", hence 1 s).
FAST_HEALTH = ("--health-interval", "1s", "--health-timeout", "3s", "--health-retries", "2", "--health-start-period", "1s")
# grpc-health-probe's exit code for a reachable server that answered, but not SERVING
PROBE_UNHEALTHY = 4


@pytest.mark.needs_no_engine
def test_build_script_and_tests_list_the_same_images() -> None:
    listed = subprocess.run([str(ROOT / "tools" / "docker" / "build-images"), "--list"], cwd=ROOT, capture_output=True,
                            text=True, check=True, env={**os.environ, "PYTHON": sys.executable}).stdout
    assert dict(line.split() for line in listed.splitlines()) == IMAGES
    assert all((ROOT / dockerfile).is_file() for dockerfile in IMAGES.values())


@pytest.mark.parametrize("name", IMAGES)
def test_image_runs_as_non_root_with_a_grpc_healthcheck(built_images: dict[str, str], resources: Resources,
                                                         name: str) -> None:
    config = json.loads(docker("image", "inspect", built_images[name]))[0]["Config"]
    assert config["User"].split(":")[0] not in ("", "0", "root"), config["User"]
    healthcheck = " ".join(config["Healthcheck"]["Test"])
    assert "grpc_health_probe -addr=" in healthcheck, healthcheck
    assert ("MESH_ADMIN_PORT" if name != "control-plane" else "MESH_XDS_PORT") in healthcheck, healthcheck
    assert resources.shell(built_images[name], "id -u") not in ("", "0")


@pytest.mark.parametrize("name", IMAGES)
def test_image_has_no_compiler_cache_or_test(built_images: dict[str, str], resources: Resources, name: str) -> None:
    # As root, to see every home folder.
    found = resources.shell(built_images[name], r"""
        for tool in gcc cc g++ go gofmt tsc pip pip3 pytest; do command -v "$tool" || true; done
        ls -d /usr/local/go /opt/venv/bin/pip* /opt/venv/lib/python3*/site-packages/pytest \
              /opt/venv/lib/python3*/site-packages/grpc_tools /app/node_modules/typescript \
              /app/node_modules/patch-package /root/.cache /root/.npm /root/go /src 2>/dev/null || true
        find / -xdev \( -path /proc -o -path /sys \) -prune -o \
             \( -name tests -o -name '*.test.js' -o -name '*_test.go' -o -name '*.test.ts' \) -print 2>/dev/null |
             grep -E '^/(app/(mesh|services|protos)|var/lib/polymesh|etc/polymesh)|site-packages/(mesh|services|shop|polymesh)/' \
             || true
        """, user="0")
    assert found == "", f"{name} carries build or test files:\n{found}"


def write_bootstrap(tmp_path: Path, service: str, xds_address: str) -> Path:
    """SERVICE-v1's xDS bootstrap (mesh/xds/bootstrap.py), its certificates where the images'
    MESH_RUN_DIR is, readable by the images' user."""
    doc = bootstrap.bootstrap(bootstrap.Node(service, f"{service}-v1", "v1", "127.0.0.1", "default"),
                              xds_address, f"/var/lib/polymesh/run/certs/{service}-v1")
    path = tmp_path / f"{service}-bootstrap.json"
    path.write_text(json.dumps(doc))
    path.chmod(0o644)
    return path


def instance_env(service: str) -> dict[str, str]:
    """A lone instance: no Consul registration, no span export; ports are the image's defaults."""
    return {"MESH_REGISTER": "false", "OTEL_TRACES_EXPORTER": "none", "MESH_INSTANCE_ID": f"{service}-v1",
            "GRPC_XDS_BOOTSTRAP": "/etc/polymesh/bootstrap.json",
            "MESH_SERVICE_PORTS": "catalog=50051,payments=50081,pricing=50061,inventory=50071,orders=50091"}


def wait_health(resources: Resources, container: str, status: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        state = resources.health(container)
        if state.get("Status") == status:
            return state
        assert docker("inspect", "-f", "{{.State.Running}}", container) == "true", f"{container} exited"
        time.sleep(0.5)
    raise AssertionError(f"{container} not {status} within {timeout} s: {json.dumps(state)[-1500:]}")


def admin_port(image: str) -> str:
    env = json.loads(docker("image", "inspect", "-f", "{{json .Config.Env}}", image))
    return next(entry.split("=", 1)[1] for entry in env if entry.startswith("MESH_ADMIN_PORT="))


@pytest.mark.parametrize("name", [name for name in IMAGES if name not in ("control-plane", "gateway")])
def test_healthcheck_is_a_grpc_call_that_sees_not_serving(built_images: dict[str, str], resources: Resources,
                                                          tmp_path: Path, name: str) -> None:
    """No control plane (the bootstrap names a closed port): the xDS listener never comes, health
    stays NOT_SERVING, and the container turns unhealthy although its admin port is open."""
    bootstrap_file = write_bootstrap(tmp_path, name, "127.0.0.1:9")
    container = resources.run(f"{name}-alone", built_images[name], *FAST_HEALTH,
                              "-v", f"{bootstrap_file}:/etc/polymesh/bootstrap.json:ro", env=instance_env(name))
    state = wait_health(resources, container, "unhealthy", 60)
    outputs = [entry.get("Output", "").strip() for entry in state.get("Log", [])]
    assert any("NOT_SERVING" in output for output in outputs), outputs
    # The port is open and answers gRPC: the probe got an answer (exit 4), not a failed connection (2).
    probe = subprocess.run(["docker", "exec", container, "grpc_health_probe",
                            f"-addr=127.0.0.1:{admin_port(built_images[name])}"], capture_output=True, text=True, timeout=30)
    assert probe.returncode == PROBE_UNHEALTHY, (probe.returncode, probe.stdout, probe.stderr)


def test_gateway_healthcheck_passes_without_a_listener(built_images: dict[str, str], resources: Resources,
                                                       tmp_path: Path) -> None:
    """The gateway serves HTTP, not an xDS-managed gRPC server: its admin port says SERVING once
    it listens, with or without a control plane (its calls wait for one)."""
    bootstrap_file = write_bootstrap(tmp_path, "gateway", "127.0.0.1:9")
    jwks = tmp_path / "jwks.json"  # the token issuer's public key, which the gateway requires
    SigningKey.generate().write_jwks(jwks)
    jwks.chmod(0o644)
    container = resources.run("gateway-alone", built_images["gateway"], *FAST_HEALTH,
                              "-v", f"{bootstrap_file}:/etc/polymesh/bootstrap.json:ro",
                              "-v", f"{jwks}:/etc/polymesh/jwks.json:ro",
                              env=instance_env("gateway") | {"GATEWAY_JWKS_FILE": "/etc/polymesh/jwks.json"})
    state = wait_health(resources, container, "healthy", 60)
    assert state["Log"][-1]["Output"].strip() == "status: SERVING", state["Log"][-1]


def test_images_turn_healthy_with_consul_and_the_control_plane(built_images: dict[str, str], resources: Resources,
                                                               tmp_path: Path) -> None:
    """Consul, the control plane image (the shipped istio/ policy: STRICT mTLS, so the instance
    serves only with the mesh CA's certificate, written to the volume they share) and catalog."""
    network = resources.network()
    run_volume = resources.volume()  # owned by the images' user: Docker copies /var/lib/polymesh/run's owner
    consul = resources.run("consul", bases_env().get("CONSUL_IMAGE") or PUBLIC_CONSUL_IMAGE, network=network)
    control_plane = resources.run(
        "control-plane", built_images["control-plane"], *FAST_HEALTH, "-v", f"{run_volume}:/var/lib/polymesh/run",
        network=network, env={"CONSUL_HTTP_ADDR": f"{consul}:8500", "OTEL_TRACES_EXPORTER": "none"})
    wait_health(resources, control_plane, "healthy", 90)

    bootstrap_file = write_bootstrap(tmp_path, "catalog", f"{control_plane}:18000")
    catalog = resources.run("catalog", built_images["catalog"], *FAST_HEALTH,
                            "-v", f"{bootstrap_file}:/etc/polymesh/bootstrap.json:ro",
                            "-v", f"{run_volume}:/var/lib/polymesh/run", network=network, env=instance_env("catalog"))
    state = wait_health(resources, catalog, "healthy", 90)
    assert state["Log"][-1]["Output"].strip() == "status: SERVING", state["Log"][-1]
