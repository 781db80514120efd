"""README "Run with Docker": docker-compose.yml, run for real. Every image built (tools/docker/build-images,
on the local base images .ci/run prepares where no registry answers), the stack started and every
container healthy, an order placed through the published gateway, its trace fetched from the Jaeger
container with spans from Python, Go and TypeScript, one inventory container killed and orders still
placed, and `docker compose down -v` leaving no container, network or volume behind.

Runs whenever a container engine and `docker compose` answer; skipped, loudly, otherwise. Its own
project name, network and published ports, so that it runs beside a developer's stack. What it saw
is kept in `.run/docker/compose-test.json` (the closing note's transcript).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from mesh.runner import compose, topology
from support.poll import poll_until
from support.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]
BASES_ENV = ROOT / ".build" / "docker-bases.env"
TRANSCRIPT = ROOT / ".run" / "docker" / "compose-test.json"
UP_TIMEOUT = 600  # seconds: a cold build of every image on 2 cores is most of it
LANGUAGES = {s.name: s.language for s in topology.SERVICES}

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def engine_reason() -> str | None:
    """Why the stack cannot run here (None: it can)."""
    for command in (["docker", "info"], ["docker", "compose", "version"]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"`{' '.join(command)}` failed: {error}"
        if done.returncode != 0:
            return f"`{' '.join(command)}` failed: {(done.stderr or done.stdout).strip()[:300]}"
    return None


def bases_env() -> dict[str, str]:
    """The base images and the Consul/Jaeger images tools/docker/prepare-engine chose (none: public)."""
    env = {}
    if BASES_ENV.exists():
        for line in BASES_ENV.read_text().splitlines():
            key, _, value = line.partition("=")
            if key and not key.startswith("#") and value:
                env[key.strip()] = value.strip().strip('"')
    return env


class Stack:
    def __init__(self, project: str, env: dict[str, str]) -> None:
        self.project, self.env = project, env
        self.gateway = f"http://127.0.0.1:{env['POLYMESH_GATEWAY_PORT']}"
        self.jaeger = f"http://127.0.0.1:{env['POLYMESH_JAEGER_PORT']}"

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(["docker", "compose", "--project-directory", str(ROOT), "-f", str(compose.COMPOSE_FILE),
                               "-p", self.project, *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        if check:
            assert done.returncode == 0, f"docker compose {' '.join(args)}: {done.stderr[-3000:]}"
        return done

    def containers(self) -> list[dict]:
        out = self.compose("ps", "--all", "--format", "json").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.project}"
        found = {}
        for kind, command in (("containers", ["docker", "ps", "-aq", "--filter", label]),
                              ("networks", ["docker", "network", "ls", "-q", "--filter", label]),
                              ("volumes", ["docker", "volume", "ls", "-q", "--filter", label])):
            found[kind] = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.split()
        return found

    def token(self, user: str) -> str:
        done = self.compose("run", "--rm", "--no-deps", "-e", "MESH_RUN_DIR=/mesh", "mesh-acl",
                            "python", "-m", "mesh.auth", "token", "--user", user)
        return done.stdout.strip().splitlines()[-1]


def free_subnet() -> str:
    """A 10.x.y prefix no Docker network uses (two stacks on one subnet collide)."""
    used = subprocess.run(["docker", "network", "inspect", "--format", "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
                           *subprocess.run(["docker", "network", "ls", "-q"], capture_output=True, text=True,
                                           timeout=30).stdout.split()],
                          capture_output=True, text=True, timeout=30).stdout
    while True:
        net = f"10.{random.randint(80, 250)}.{random.randint(0, 250)}"
        if f"{net}.0/" not in used:
            return net


@pytest.fixture(scope="module")
def stack():
    reason = engine_reason()
    if reason:
        pytest.skip(f"NO CONTAINER ENGINE: the compose test did not run ({reason}); "
                    "tools/docker/prepare-engine sets one up (bash .ci/run calls it)")
    gateway, jaeger, consul = free_ports(3)
    env = {**os.environ, **bases_env(), "POLYMESH_NET": free_subnet(), "POLYMESH_GATEWAY_PORT": str(gateway),
           "POLYMESH_JAEGER_PORT": str(jaeger), "POLYMESH_CONSUL_PORT": str(consul)}
    built = subprocess.run([str(ROOT / "tools" / "docker" / "build-images")], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=3000)
    assert built.returncode == 0, f"tools/docker/build-images: {built.stderr[-3000:]}"
    running = Stack(f"polymesh-test-{os.getpid()}", env)
    started = time.monotonic()
    try:
        up = running.compose("up", "--detach", "--wait", "--wait-timeout", str(UP_TIMEOUT), timeout=UP_TIMEOUT + 60,
                             check=False)
        running.up_seconds = time.monotonic() - started
        assert up.returncode == 0, f"docker compose up: {up.stderr[-3000:]}\n" + running.compose(
            "logs", "--tail", "30", check=False).stdout[-6000:]
        yield running
    finally:
        running.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=180, check=False)


def place_order(stack: Stack, token: str, key: str) -> httpx.Response:
    body = {"customerId": "compose-test", "currency": "EUR", "items": [{"productId": "sku-grinder", "quantity": 1}],
            "payment": {"cardToken": "tok_visa"}}
    return httpx.post(f"{stack.gateway}/v1/orders", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key})


def test_the_stack_serves_orders_traces_them_across_languages_and_survives_a_lost_inventory(stack: Stack) -> None:
    transcript: dict = {"up_seconds": round(stack.up_seconds, 1)}
    # every container healthy (or, for the two setup steps, exited 0)
    states = {c["Service"]: (c["State"], c.get("Health", ""), c.get("ExitCode", 0)) for c in stack.containers()}
    for name in ("mesh-config", "mesh-acl"):
        assert states[name][0] == "exited" and states[name][2] == 0, states[name]
    instances = [i.name for s in topology.SERVICES for i in s.instances]
    assert {name: states[name][1] for name in ["consul", "control-plane", *instances]} == \
        {name: "healthy" for name in ["consul", "control-plane", *instances]}
    transcript["containers"] = {name: " ".join(str(x) for x in state if x != "") for name, state in states.items()}

    token = stack.token("compose-test")
    assert httpx.post(f"{stack.gateway}/v1/orders", json={}, timeout=10).status_code == 401  # no token: refused
    reply = place_order(stack, token, "compose-test-1")
    assert reply.status_code == 200, reply.text
    order = reply.json()["order"]
    trace_id = reply.headers["X-Trace-Id"]
    transcript["order"] = {"id": order["id"], "status": order["status"], "total": order["total"], "trace_id": trace_id}
    assert order["status"] == "ORDER_STATUS_CONFIRMED"

    def services_in_trace() -> set[str] | bool:
        answer = httpx.get(f"{stack.jaeger}/api/v3/traces/{trace_id}", timeout=5)
        if answer.status_code != 200:
            return False
        found = {attribute["value"]["stringValue"]
                 for batch in answer.json()["result"]["resourceSpans"]
                 for attribute in batch["resource"]["attributes"] if attribute["key"] == "service.name"}
        return found if {"gateway", "orders", "pricing", "inventory", "payments", "catalog"} <= found else False

    services = poll_until(services_in_trace, 30, 0.5, f"trace {trace_id} in Jaeger with every service's spans")
    transcript["trace_services"] = sorted(services)
    assert {LANGUAGES[s] for s in services if s in LANGUAGES} == {"python", "go", "typescript"}

    # one inventory container dies: orders go on (Consul's check fails, the control plane drops it)
    stack.compose("kill", "inventory-2")
    results = []

    def orders_succeed() -> bool:
        results.append(place_order(stack, token, f"compose-test-after-{len(results)}").status_code)
        return results[-5:] == [200] * 5

    poll_until(orders_succeed, 60, 0.2, "5 orders in a row placed with inventory-2 dead")
    transcript["after_kill"] = {"orders": len(results), "status_codes": results}
    assert stack.containers() and {c["Service"]: c["State"] for c in stack.containers()}["inventory-2"] == "exited"

    stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=180)
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
    TRANSCRIPT.parent.mkdir(parents=True, exist_ok=True)
    TRANSCRIPT.write_text(json.dumps(transcript, indent=1))
