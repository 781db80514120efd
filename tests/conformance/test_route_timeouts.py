"""docs/runtime-contract.md, "Calls between services": a route timeout from a VirtualService bounds
the call exactly in every language (Go and TypeScript through gRPC's max_stream_duration, Python
through the runtime: mesh/runtime/routes.py).

A relaying probe of each language calls its peer through xDS under a VirtualService `timeout` on
the peer, and the relayed call is held so that only the route timeout can end it, with
DEADLINE_EXCEEDED, which the relaying probe passes on:
- by a slow peer: one that waits 3 s before each call's handler (`MESH_INJECT_DELAY_MS`,
  "Injected failures" of the contract);
- by a fault `delay` of 3 s on the route itself (the fault filter is on every client listener).
  gRPC-Go starts the route timeout after a fault delay (stream.go runs the fault interceptor before
  it sets max_stream_duration's deadline), as Envoy starts a route's `timeout` after the fault
  filter (istio/istio#13313, envoyproxy/gateway#8193): there the call ends OK after the delay,
  which the Go case checks, so that a grpc-go that changes it is noticed.
Each timeout is measured on 5 calls: none may end early, their median must be within 10%.
The time is measured from the outside, around the test's call to the relaying probe (one channel
kept open), minus a baseline: the quickest of 10 relays to a peer that answers at once, after 30 to
warm up (0.3-4 ms; their median varies more in Node, 2-40 ms).
Each test runs its own control plane on a folder of Istio resources it writes.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import pytest
from conftest import REPO, SERVICE_PORT, Mesh, Probe
from envoy.config.route.v3 import route_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from polymesh.conformance.v1 import conformance_pb2, conformance_pb2_grpc
from support.poll import poll_until
from support.xds import ControlPlane, start_control_plane

pytestmark = pytest.mark.integration

TOLERANCE = 0.10  # of the route timeout, either way
FAULT_DELAY = 3.0  # seconds the fault filter holds every call to the peer, when asked
OUTER_TIMEOUT = 10.0  # the test's own deadline on the call to the relaying probe: far beyond the rest
RELOAD_LIMIT = 1.0  # seconds from a file write to the relaying probe following it
FIRST_CALL_SETUP = 0.5  # seconds a channel's first call may spend on getting its xDS config
MEASURED = 5  # calls measured per timeout
WARM_UP, BASELINE = 30, 10  # relays to the answering peer before the baseline, and in it (its least)


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

    def __init__(self, probe: Probe, peer: Probe, quick: Probe | None = None) -> None:
        """Relays go to `peer`; the baseline is measured on relays to `quick` (default: `peer`)."""
        self.probe, self.peer, self.quick = probe, peer, quick or peer
        self.channel = probe.channel()
        self.stub = conformance_pb2_grpc.ConformanceServiceStub(self.channel)
        self.baseline = 0.0

    def relay(self, to: Probe | None = None, metadata: tuple[tuple[str, str], ...] = (),
              timeout: float = OUTER_TIMEOUT) -> tuple[str, float]:
        """The relayed call's code and the seconds it took, less the baseline. `metadata` goes to
        the relaying probe, which propagates its routing headers (x-user-tier) on the relayed call."""
        request = conformance_pb2.EchoRequest(message="relay", relay_to=(to or self.peer).service)
        started = time.monotonic()
        try:
            self.stub.Echo(request, timeout=timeout, metadata=metadata)
            code = "OK"
        except grpc.RpcError as error:
            code = error.code().name
        return code, time.monotonic() - started - self.baseline

    def measure_baseline(self) -> float:
        poll_until(lambda: self.relay(self.quick)[0] == "OK", 10, 0.1, "a relay to a peer that answers at once")
        for _ in range(WARM_UP):  # Node's first relays take tens of ms more (its JIT warming up)
            self.relay(self.quick)
        unbounded = [self.relay(self.quick) for _ in range(BASELINE)]
        assert {code for code, _ in unbounded} == {"OK"}, unbounded
        self.baseline = min(seconds for _, seconds in unbounded)  # the least: so that no call looks early
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

    def follow(self, file: Path, text: str, timeouts: list[float], metadata: tuple[tuple[str, str], ...] = ()) -> float:
        """Write the policy (its routes' `timeouts`); once the relaying probe's CSDS shows it, poll
        relays (with `metadata`) until one ends after the first route's timeout; then measure.
        Returns the seconds from the write to the first call that followed."""
        # grpcio gets the timeout in RouteAction.timeout only (it fires max_stream_duration early)
        sent = [(t, None) if self.probe.language == "python" else (t, t) for t in timeouts]
        written = write(file, text)
        poll_until(lambda: self.route_timeouts() == sent, 5, 0.02, f"CSDS showing the route timeouts {timeouts}")
        shown = time.monotonic()

        def followed() -> float:
            started = time.monotonic()
            code, seconds = self.relay(metadata=metadata)
            assert code == "DEADLINE_EXCEEDED" and within(seconds, timeouts[0]), (code, seconds)
            return started

        started = poll_until(followed, 10, 0, f"a relayed call ending after {timeouts[0]}s")
        print(f"[{self.probe.language}] route timeouts {timeouts}: in CSDS {(shown - written) * 1000:.0f} ms"
              f" and followed {(started - written) * 1000:.0f} ms after the write")
        return started - written

    def measure(self, timeout: float, metadata: tuple[tuple[str, str], ...] = (), what: str = "") -> None:
        """MEASURED relays: each ended by the timeout, none early, their median within the
        tolerance (one call may come back late when the relaying process is slow to pass the
        error on: the TypeScript probe has logged 0.309 s for a relay seen 0.336 s from outside)."""
        seen = [self.relay(metadata=metadata) for _ in range(MEASURED)]
        print(f"[{self.probe.language}] route timeout {timeout * 1000:.0f} ms{what}: fired after "
              + ", ".join(f"{s * 1000:.0f}" for _, s in seen) + " ms")
        for code, elapsed in seen:
            assert code == "DEADLINE_EXCEEDED" and elapsed >= timeout * (1 - TOLERANCE), (
                f"{self.probe.language}: route timeout {timeout}s{what}, relayed call {code} after {elapsed:.3f}s")
        median = statistics.median(s for _, s in seen)
        assert within(median, timeout), f"{self.probe.language}: route timeout {timeout}s{what}, median {median:.3f}s"


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


BETA = (("x-user-tier", "beta"),)  # a routing header every runtime propagates by default


def test_a_route_timeout_bounds_a_call_to_a_slow_peer(world: Mesh, language: str, policed) -> None:
    cp, istio = policed
    slow = world.start_probe(language, xds_address=cp.address, extra_env={"MESH_INJECT_DELAY_MS": "3000"})
    quick = world.start_probe(language, xds_address=cp.address)
    peers = {slow.service: SERVICE_PORT, quick.service: SERVICE_PORT}
    relayer = Relayer(world.start_probe(language, xds_address=cp.address, peers=peers), slow, quick)
    print(f"\n[{language}] baseline relay {relayer.measure_baseline() * 1000:.1f} ms")
    # the relaying probe's channel to the slow peer, opened by a call the test's own deadline ends
    # (the Go probe has passed on its relay's CANCELLED, 3 times in about 15 runs: the deadline ends
    # the incoming call and the relayed one within the same millisecond; either way the call ended)
    assert relayer.relay(timeout=0.5)[0] in ("DEADLINE_EXCEEDED", "CANCELLED")
    policy = istio / "slow.yaml"
    for timeout in (0.3, 0.7):
        followed = relayer.follow(policy, virtual_service(slow.service, ("", timeout), delay=False), [timeout])
        assert followed < RELOAD_LIMIT, f"{timeout}s followed {followed:.2f}s after the write"
        relayer.measure(timeout)

    # the route is chosen on the relayed call's headers, the propagated ones included
    header_match = "match: [{headers: {x-user-tier: {exact: beta}}}]"
    relayer.follow(policy, virtual_service(slow.service, (header_match, 0.3), ("", 0.7), delay=False), [0.3, 0.7],
                   BETA)
    relayer.measure(0.3, BETA, " (x-user-tier: beta, propagated)")
    relayer.measure(0.7, (), " (no header)")

    # a new channel's first call is bounded too (counted once its config is in, as gRPC routes it)
    fresh = Relayer(world.start_probe(language, xds_address=cp.address, peers=peers), slow)
    fresh.baseline = relayer.baseline
    code, elapsed = fresh.relay(metadata=BETA)
    print(f"[{language}] first call on a new channel, route timeout 300 ms: {code} after {elapsed * 1000:.0f} ms")
    assert code == "DEADLINE_EXCEEDED" and within(elapsed, 0.3, FIRST_CALL_SETUP), (code, elapsed)


def test_a_fault_delay_on_the_route_is_cut_by_its_timeout(world: Mesh, language: str, policed) -> None:
    cp, istio = policed
    peer = world.start_probe(language, xds_address=cp.address)
    probe = world.start_probe(language, xds_address=cp.address, peers={peer.service: SERVICE_PORT})
    relayer = Relayer(probe, peer)
    print(f"\n[{language}] baseline relay {relayer.measure_baseline() * 1000:.1f} ms")
    if language != "go":
        relayer.follow(istio / "peer.yaml", virtual_service(peer.service, ("", 0.3)), [0.3])
        relayer.measure(0.3)
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
        # The first call too: a process that starts while the peer's listener does not exist yet has
        # its first call fail or queue in gRPC, unbounded (mesh/runtime/routes.py: nothing to bound).
        seen = run_calls(world, peer, cp, *(call for call, _ in calls))
        assert seen[0]["code"] == seen[1]["code"] == "DEADLINE_EXCEEDED", seen
        return seen

    seen = poll_until(in_force, 30, 0.2, "the VirtualService in force")
    print("\n[python] " + "; ".join(f"{c['code']} after {c['ms']:.0f} ms (route {t * 1000:.0f} ms)"
                                    for c, (_, t) in zip(seen, calls, strict=True)))
    for index, (call, (spec, timeout)) in enumerate(zip(seen, calls, strict=True)):
        slack = FIRST_CALL_SETUP if index == 0 else 0.0
        assert call["code"] == "DEADLINE_EXCEEDED" and within(call["ms"] / 1000, timeout, slack), (spec, call)
        assert call["messages"] == 0, call  # the fault holds the stream before its first message
