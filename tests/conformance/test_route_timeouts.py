"""docs/runtime-contract.md, "Calls between services": a route timeout from a VirtualService bounds
the call exactly in every language (Go and TypeScript through gRPC's max_stream_duration, Python
through the runtime: mesh/runtime/routes.py).

A relaying probe of each language calls its peer through xDS under a VirtualService `timeout` on
the peer, and the relayed call is held so that only the route timeout can end it, with
DEADLINE_EXCEEDED, which the relaying probe passes on:
- by a peer that does not answer: the peer is frozen (SIGSTOP) after the relaying probe connected
  to it (it is registered in Consul by the test with a TTL check, so that its own failing health
  check does not take it out of the endpoints meanwhile);
- by a fault `delay` of 3 s on the route itself (the fault filter is on every client listener).
  gRPC-Go starts the route timeout after a fault delay (stream.go runs the fault interceptor before
  it sets max_stream_duration's deadline), as Envoy starts a route's `timeout` after the fault
  filter (istio/istio#13313, envoyproxy/gateway#8193): there the call ends OK after the delay,
  which the Go case checks, so that a grpc-go that changes it is noticed.
Each timeout is measured on 5 calls: none may end early, their median must be within 10%.
The time is measured from the outside, around the test's call to the relaying probe (one channel
kept open), minus a baseline: the median of 10 relays to the answering peer after 30 to warm up
(0.5-6 ms).
Each test runs its own control plane on a folder of Istio resources it writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import pytest
from envoy.config.route.v3 import route_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from polymesh.conformance.v1 import conformance_pb2, conformance_pb2_grpc
from support.poll import poll_until
from support.xds import ControlPlane, start_control_plane

from conftest import REPO, SERVICE_PORT, Mesh, Probe

pytestmark = pytest.mark.integration

TOLERANCE = 0.10  # of the route timeout, either way
FAULT_DELAY = 3.0  # seconds the fault filter holds every call to the peer, when asked
OUTER_TIMEOUT = 10.0  # the test's own deadline on the call to the relaying probe: far beyond the rest
RELOAD_LIMIT = 1.0  # seconds from a file write to the relaying probe following it
FIRST_CALL_SETUP = 0.5  # seconds a channel's first call may spend on getting its xDS config
MEASURED = 5  # calls measured per timeout
WARM_UP, BASELINE = 30, 10  # relays to the answering peer before the baseline, and in it (its median)


def virtual_service(host: str, *routes: tuple[str, float], delay: bool = True) -> str:
    """Routes (match YAML or "", timeout in seconds), each with the 3 s fault delay if `delay`."""
    fault = f"  fault: {{delay: {{fixedDelay: {FAULT_DELAY}s, percentage: {{value: 100}}}}}}\n" if delay else ""
    http = "".join(
        f"- {match + chr(10) + '  ' if match else ''}timeout: {timeout}s\n{fault}"
        f"  route: [{{destination: {{host: {host}}}}}]\n"
        for match, timeout in routes)
    return textwrap.dedent(f"""\
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: {host}}}
        spec:
          hosts: [{host}]
          http:
        """) + textwrap.indent(http, "  ")


def write(path: Path, text: str) -> float:
    """Replace the file atomically, as an editor saving does; returns when (time.monotonic())."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return time.monotonic()


class Relayer:
    """The test's side of a relaying probe: one open channel, each relay timed around the call."""

    def __init__(self, probe: Probe, peer: Probe) -> None:
        self.probe, self.peer = probe, peer
        self.channel = probe.channel()
        self.stub = conformance_pb2_grpc.ConformanceServiceStub(self.channel)
        self.baseline = 0.0

    def relay(self) -> tuple[str, float]:
        """The relayed call's code and the seconds it took, less the baseline."""
        request = conformance_pb2.EchoRequest(message="relay", relay_to=self.peer.service)
        started = time.monotonic()
        try:
            self.stub.Echo(request, timeout=OUTER_TIMEOUT)
            code = "OK"
        except grpc.RpcError as error:
            code = error.code().name
        return code, time.monotonic() - started - self.baseline

    def measure_baseline(self) -> float:
        poll_until(lambda: self.relay()[0] == "OK", 10, 0.1, "a relay to the answering peer")
        for _ in range(WARM_UP):  # Node's first relays take tens of ms more (its JIT warming up)
            self.relay()
        unbounded = [self.relay() for _ in range(BASELINE)]
        assert {code for code, _ in unbounded} == {"OK"}, unbounded
        self.baseline = statistics.median(seconds for _, seconds in unbounded)
        return self.baseline

    def route_timeouts(self) -> list[tuple[float | None, float | None]]:
        """(RouteAction.timeout, max_stream_duration) in seconds of each route the relaying probe's
        CSDS shows for the peer; [] before it has the route configuration."""
        with self.probe.admin() as channel:
            reply = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel).FetchClientStatus(
                csds_pb2.ClientStatusRequest(), timeout=2)
        name = f"outbound|{SERVICE_PORT}||{self.peer.service}.default.svc.cluster.local"
        for config in reply.config:
            for resource in config.generic_xds_configs:
                if resource.name == name and resource.type_url.endswith("RouteConfiguration"):
                    routes = route_pb2.RouteConfiguration()
                    resource.xds_config.Unpack(routes)
                    return [(seconds(r.route, "timeout"), seconds(r.route.max_stream_duration, "max_stream_duration"))
                            for host in routes.virtual_hosts for r in host.routes]
        return []

    def follow(self, file: Path, text: str, timeout: float) -> tuple[float, list[float]]:
        """Write the policy; once the relaying probe's CSDS shows it, poll relays until one ends
        after `timeout`; then measure. Returns (seconds from the write to the first call that
        followed, the measured seconds)."""
        # grpcio gets the timeout in RouteAction.timeout only (it fires max_stream_duration early)
        sent = (timeout, None) if self.probe.language == "python" else (timeout, timeout)
        written = write(file, text)
        poll_until(lambda: self.route_timeouts() == [sent], 5, 0.02, f"CSDS showing the {timeout}s route timeout")
        shown = time.monotonic()

        def followed() -> float:
            started = time.monotonic()
            code, seconds = self.relay()
            assert code == "DEADLINE_EXCEEDED" and within(seconds, timeout), (code, seconds)
            return started

        started = poll_until(followed, 10, 0, f"a relayed call ending after {timeout}s")
        seen = [self.relay() for _ in range(MEASURED)]
        print(f"[{self.probe.language}] route timeout {timeout * 1000:.0f} ms: in CSDS {(shown - written) * 1000:.0f} ms"
              f" and followed {(started - written) * 1000:.0f} ms after the write; fired after "
              + ", ".join(f"{s * 1000:.0f}" for _, s in seen) + " ms")
        # each call ended by the timeout, none early; their median within the tolerance (one call
        # may come back late when the relaying process is slow to pass the error on: the TypeScript
        # probe has logged 0.309 s for a relay seen 0.336 s from outside)
        for code, elapsed in seen:
            assert code == "DEADLINE_EXCEEDED" and elapsed >= timeout * (1 - TOLERANCE), (
                f"{self.probe.language}: route timeout {timeout}s, relayed call {code} after {elapsed:.3f}s")
        median = statistics.median(s for _, s in seen)
        assert within(median, timeout), f"{self.probe.language}: route timeout {timeout}s, median {median:.3f}s"
        return started - written, [s for _, s in seen]


def seconds(message, field: str) -> float | None:
    return getattr(message, field).ToMilliseconds() / 1000 if message.HasField(field) else None


def within(elapsed: float, timeout: float, slack: float = 0.0) -> bool:
    return timeout * (1 - TOLERANCE) <= elapsed <= timeout * (1 + TOLERANCE) + slack


@pytest.fixture
def policed(world: Mesh, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[ControlPlane, Path]:
    """A control plane of this test's own enforcing the folder tmp_path/istio (stopped with the test)."""
    istio = tmp_path / "istio"
    istio.mkdir()
    cp = start_control_plane(world.procs, world.consul.http_addr, name=f"xds-{request.node.name}",
                             env={"MESH_ISTIO_DIR": str(istio)})
    return cp, istio


@contextlib.contextmanager
def frozen(peer: Probe):
    peer.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        peer.proc.send_signal(signal.SIGCONT)


def test_a_route_timeout_bounds_a_call_to_a_peer_that_does_not_answer(world: Mesh, language: str, policed) -> None:
    cp, istio = policed
    peer = world.start_probe(language, xds_address=cp.address, wait=False, extra_env={"MESH_REGISTER": "false"})
    poll_until(lambda: peer.health() == "SERVING", 30, 0.1, "the peer SERVING")
    world.consul.register(peer.service, peer.instance_id, peer.port, meta={"version": "v1", "language": language})
    try:
        probe = world.start_probe(language, xds_address=cp.address, peers={peer.service: SERVICE_PORT})
        relayer = Relayer(probe, peer)
        print(f"\n[{language}] baseline relay {relayer.measure_baseline() * 1000:.1f} ms")
        with frozen(peer):
            for timeout in (0.3, 1.0):
                policy = virtual_service(peer.service, ("", timeout), delay=False)
                followed, _ = relayer.follow(istio / "peer.yaml", policy, timeout)
                assert followed < RELOAD_LIMIT, f"{timeout}s followed {followed:.2f}s after the write"
            # a new channel's first call is bounded too (counted once its config is in, as gRPC routes it)
            fresh = Relayer(world.start_probe(language, xds_address=cp.address, peers={peer.service: SERVICE_PORT}),
                            peer)
            fresh.baseline = relayer.baseline
            code, elapsed = fresh.relay()
    finally:
        world.consul.deregister(peer.instance_id)
    print(f"[{language}] first call on a new channel, route timeout 1000 ms: {code} after {elapsed * 1000:.0f} ms")
    assert code == "DEADLINE_EXCEEDED" and within(elapsed, 1.0, FIRST_CALL_SETUP), (code, elapsed)


def test_a_fault_delay_on_the_route_is_cut_by_its_timeout(world: Mesh, language: str, policed) -> None:
    cp, istio = policed
    peer = world.start_probe(language, xds_address=cp.address)
    probe = world.start_probe(language, xds_address=cp.address, peers={peer.service: SERVICE_PORT})
    relayer = Relayer(probe, peer)
    print(f"\n[{language}] baseline relay {relayer.measure_baseline() * 1000:.1f} ms")
    if language != "go":
        relayer.follow(istio / "peer.yaml", virtual_service(peer.service, ("", 0.3)), 0.3)
        return
    # grpc-go runs the fault filter's delay before it sets max_stream_duration's deadline (stream.go:
    # the config selector's interceptor, then newClientStreamWithParams), as Envoy's router starts a
    # route timeout only after the fault filter: the call is delayed 3 s, then answered at once.
    write(istio / "peer.yaml", virtual_service(peer.service, ("", 0.3)))
    poll_until(lambda: relayer.route_timeouts() == [(0.3, 0.3)], 5, 0.02, "CSDS showing the 0.3s route timeout")
    code, elapsed = relayer.relay()
    print(f"[go] route timeout 300 ms after a 3 s fault delay: {code} after {elapsed * 1000:.0f} ms")
    assert code == "OK" and elapsed >= FAULT_DELAY, (
        f"grpc-go now cuts a fault delay by the route timeout ({code} after {elapsed:.3f}s): check it as the other "
        "languages and drop the exception from docs/runtime-contract.md and this module's docstring")


def run_calls(world: Mesh, peer: Probe, cp: ControlPlane, *calls: dict) -> list[dict]:
    """tests/conformance/probes/python/calls.py: calls on one channel of the Python runtime's dial."""
    env = {**os.environ, **world.probe_env("python", "caller", f"caller-{time.monotonic_ns()}", 0, 0,
                                           xds_address=cp.address, peers={peer.service: SERVICE_PORT}),
           "OTEL_TRACES_EXPORTER": "none", "MESH_CALL_TIMEOUT": str(OUTER_TIMEOUT)}
    done = subprocess.run([sys.executable, str(REPO / "tests/conformance/probes/python/calls.py"), peer.service,
                           *map(json.dumps, calls)], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_python_applies_the_timeout_of_the_route_each_call_takes_streams_included(world: Mesh, policed) -> None:
    """Route by header first, then by path; a server-streaming call is bounded as a whole, as
    max_stream_duration bounds a stream (held by the fault delay). Timed inside the calling process."""
    cp, istio = policed
    peer = world.start_probe("python", xds_address=cp.address)
    header_match = "match: [{headers: {x-route: {exact: short}}}]"
    path_match = "match: [{uri: {exact: /polymesh.conformance.v1.ConformanceService/EchoStream}}]"
    write(istio / "peer.yaml", virtual_service(peer.service, (header_match, 0.3), (path_match, 0.6), ("", 1.0)))
    short = [["x-route", "short"]]
    calls = [({"kind": "unary", "metadata": short}, 0.3),  # the channel's first call
             ({"kind": "unary"}, 1.0), ({"kind": "unary", "metadata": short}, 0.3),
             ({"kind": "stream"}, 0.6), ({"kind": "stream", "metadata": short}, 0.3),
             ({"kind": "unary", "timeout": 0.2}, 0.2)]  # the call's own timeout is smaller

    def in_force() -> list[dict]:  # once the control plane has the peer in its catalog
        seen = run_calls(world, peer, cp, *(call for call, _ in calls))
        assert seen[1]["code"] == "DEADLINE_EXCEEDED", seen
        return seen

    seen = poll_until(in_force, 30, 0.2, "the VirtualService in force")
    print("\n[python] " + "; ".join(f"{c['code']} after {c['ms']:.0f} ms (route {t * 1000:.0f} ms)"
                                    for c, (_, t) in zip(seen, calls, strict=True)))
    for index, (call, (spec, timeout)) in enumerate(zip(seen, calls, strict=True)):
        slack = FIRST_CALL_SETUP if index == 0 else 0.0
        assert call["code"] == "DEADLINE_EXCEEDED" and within(call["ms"] / 1000, timeout, slack), (spec, call)
        assert call["messages"] == 0, call  # the fault holds the stream before its first message
