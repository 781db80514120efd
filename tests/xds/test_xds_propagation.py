"""A Consul change reaches real grpcio, grpc-go and grpc-js xDS clients within 1 s.

Three probe clients (probes/{python,go,node}) call `xds:///catalog:7000` every 10 ms and print what
they saw; the backends answer with their own name. For each change made in Consul the test
measures, per language, from just before the Consul API call to the first call that reflects
it, and prints the figures.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from support.backends import start_catalog_backend
from support.poll import poll_until
from support.xds import write_bootstrap

pytestmark = pytest.mark.integration

LIMIT = 1.0  # seconds
TARGET = "xds:///catalog:7000"  # the service port; the backends listen on ports of their own
SETTLED = 20  # consecutive calls that show a removal took effect


def seen(proc) -> list[tuple[float, str]]:
    out = []
    for line in proc.log_lines():
        if line.startswith("{"):
            entry = json.loads(line)
            out.append((entry["t"], entry.get("backend") or f"error: {entry['error']}"))
    return out


def first_call_with(proc, since: float, backend: str) -> float | None:
    return next((t for t, b in seen(proc) if t >= since and b == backend), None)


def first_call_without(proc, since: float, gone: str) -> float | None:
    """When `gone` stopped being called: the first call after the last one it served, once
    SETTLED calls in a row have not reached it."""
    after = [(t, b) for t, b in seen(proc) if t >= since]
    last = max((i for i, (_, b) in enumerate(after) if b == gone), default=-1)
    tail = after[last + 1:]
    return tail[0][0] if len(tail) >= SETTLED else None


def start_probes(procs, tmp_path, xds_address: str, python_probe, go_probe, node_probe) -> dict:
    """The three probe clients calling TARGET, each with its own bootstrap and node id."""
    commands = {
        "python": [sys.executable, str(python_probe), "--target", TARGET, "--interval-ms", "10"],
        "go": [str(go_probe), "-target", TARGET, "-interval", "10ms"],
        "node": ["node", str(node_probe), "--target", TARGET, "--interval-ms", "10"],
    }
    probes = {}
    for language, command in commands.items():
        bootstrap = write_bootstrap(tmp_path / f"{language}.json", xds_address, instance_id=f"probe-{language}",
                                    service="orders")
        probes[language] = procs.start(f"probe-{language}", command, env={"GRPC_XDS_BOOTSTRAP": str(bootstrap)})
    return probes


def test_consul_changes_reach_python_go_and_node_clients_within_a_second(
    consul_agent, control_plane, procs, tmp_path, python_probe, go_probe, node_probe
):
    backends = {name: start_catalog_backend(name) for name in ("a", "b")}
    port = {name: p for name, (_, p) in backends.items()}
    try:
        consul_agent.register("catalog", "catalog-a", port["a"], meta={"version": "v1", "language": "python"})
        probes = start_probes(procs, tmp_path, control_plane.address, python_probe, go_probe, node_probe)
        for language, proc in probes.items():
            poll_until(lambda: first_call_with(proc, 0, "a"), 30, 0.05, f"the {language} probe to reach a")
        started = time.time()

        figures: dict[str, dict[str, float]] = {}

        def measure(change: str, act, check) -> None:
            changed_at = time.time()
            act()
            for language, proc in probes.items():
                reflected = poll_until(lambda: check(proc, changed_at), 10, 0.02, f"{language}: {change}")
                figures.setdefault(change, {})[language] = reflected - changed_at

        measure("add b", lambda: consul_agent.register("catalog", "catalog-b", port["b"]),
                lambda proc, since: first_call_with(proc, since, "b"))
        measure("deregister a", lambda: consul_agent.deregister("catalog-a"),
                lambda proc, since: first_call_without(proc, since, "a"))
        measure("add a again", lambda: consul_agent.register("catalog", "catalog-a", port["a"]),
                lambda proc, since: first_call_with(proc, since, "a"))
        measure("b critical", lambda: consul_agent.ttl_fail("catalog-b"),
                lambda proc, since: first_call_without(proc, since, "b"))

        print("\npropagation latency, Consul change -> first call that reflects it (ms):")
        print(f"{'change':<14}" + "".join(f"{language:>10}" for language in probes))
        for change, per_language in figures.items():
            print(f"{change:<14}" + "".join(f"{per_language[language] * 1000:>10.0f}" for language in probes))
        for change, per_language in figures.items():
            for language, latency in per_language.items():
                assert latency < LIMIT, f"{change} reached {language} after {latency:.3f}s"
        for language, proc in probes.items():
            errors = [b for t, b in seen(proc) if t >= started and b.startswith("error")]
            assert not errors, f"{language} probe saw errors while endpoints changed: {errors[:3]}"
        assert not [e for e in control_plane.logs() if "NACK" in e["message"]], "a client rejected a resource"
    finally:
        for server, _ in backends.values():
            server.stop(0)


def test_clients_resubscribe_after_a_control_plane_restart(
    consul_agent, control_plane, start_control_plane, procs, tmp_path, python_probe, go_probe, node_probe
):
    """Clients keep their config while the control plane is down (no failed call) and, once it is
    back on the same port, re-subscribe with the old versions and get new changes."""
    backends = {name: start_catalog_backend(name) for name in ("a", "b")}
    port = {name: p for name, (_, p) in backends.items()}
    try:
        consul_agent.register("catalog", "catalog-a", port["a"])
        probes = start_probes(procs, tmp_path, control_plane.address, python_probe, go_probe, node_probe)
        for language, proc in probes.items():
            poll_until(lambda: first_call_with(proc, 0, "a"), 30, 0.05, f"the {language} probe to reach a")
        started = time.time()
        assert control_plane.proc.stop() == 0
        restarted = start_control_plane(consul_agent.http_addr, port=control_plane.port, name="xds-restarted")
        reconnected = poll_until(lambda: {c.node.id.split("~")[2] for c in restarted.client_status().config}
                                 >= {f"probe-{p}.default" for p in probes}, 30, 0.05, "every probe to reconnect")
        assert reconnected
        changed_at = time.time()
        consul_agent.register("catalog", "catalog-b", port["b"])
        for language, proc in probes.items():
            poll_until(lambda: first_call_with(proc, changed_at, "b"), 10, 0.02, f"the {language} probe to reach b")
        for language, proc in probes.items():
            errors = [b for t, b in seen(proc) if t >= started and b.startswith("error")]
            assert not errors, f"{language} probe saw errors across the restart: {errors[:3]}"
    finally:
        for server, _ in backends.values():
            server.stop(0)
