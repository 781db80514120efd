"""Every rule of docs/runtime-contract.md, checked on a real instance of each runtime library.

Each test is one row of the contract, parametrized over python, go and typescript: a probe of that
language runs against a real Consul, the real control plane and a real Jaeger (conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from conftest import REPO, SERVICE_PORT, Mesh, Probe, command
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from google.rpc import error_details_pb2
from grpc_channelz.v1 import channelz_pb2, channelz_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mesh.runtime.errors import details_of
from mesh.xds.bootstrap import SERVER_LISTENER_PREFIX
from polymesh.conformance.v1 import conformance_pb2, conformance_pb2_grpc
from support.consul import ConsulAgent
from support.poll import poll_until
from support.ports import free_port
from support.reports import add_failure_report
from support.xds import start_control_plane

pytestmark = pytest.mark.integration

Failure = conformance_pb2.Failure
REQUIRED_LOG_KEYS = {"timestamp", "severity", "message", "service.name", "service.instance.id"}
SEVERITIES = {"DEBUG", "INFO", "WARN", "ERROR"}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
ROUNDING_MS = 100  # grpc-timeout travels rounded up to its unit, so a server may see a little more


def traceparent(trace_id: str = TRACE_ID) -> tuple[tuple[str, str]]:
    return (("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),)


@pytest.fixture(scope="module")
def called_probes(mesh: Mesh) -> Iterator[dict[str, Probe]]:
    """One probe per language for the tests that only call it and leave it as they found it
    (errors, streams, reflection): started at its first use, stopped with the module."""
    started: dict[str, Probe] = {}
    yield started
    for probe in started.values():
        probe.proc.stop()


@pytest.fixture
def called(world: Mesh, language: str, called_probes: dict[str, Probe], request: pytest.FixtureRequest) -> Probe:
    """This language's shared probe (`world` stops only what the test itself started)."""
    if language not in called_probes:
        probe = called_probes[language] = world.start_probe(language)
        world.procs.started.remove(probe.proc)  # the module's to stop, not the test's
    probe = called_probes[language]
    add_failure_report(request, lambda: f"----- {probe.instance_id} (shared) {probe.proc.log_path} -----\n{probe.proc.tail(40)}")
    return probe


def unreachable_warnings(probe) -> list[dict]:
    return [r for r in probe.logs() if r["severity"] == "WARN" and "consul unreachable" in r["message"].lower()]


# -- configuration ---------------------------------------------------------------------------------


def test_bad_configuration_exits_2_naming_every_bad_variable(world: Mesh, language: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_XDS_BOOTSTRAP"}
    env.update({"MESH_PORT": "abc", "MESH_DRAIN_TIMEOUT": "0", "MESH_SERVICE_PORTS": "catalog=x",
                "MESH_LOG_LEVEL": "loud", "MESH_PROPAGATE_HEADERS": "X-User-Tier", "MESH_INJECT_FAILURE_PERCENT": "101",
                "MESH_INJECT_DELAY_MS": "-1", "CONSUL_HTTP_TOKEN": "", "CONSUL_HTTP_TOKEN_FILE": "/nonexistent/probe.token"})
    done = subprocess.run(command(language), env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "invalid configuration" in lines[0]
    for name in ("MESH_PORT", "MESH_DRAIN_TIMEOUT", "MESH_SERVICE_PORTS", "MESH_LOG_LEVEL", "MESH_PROPAGATE_HEADERS",
                 "MESH_INJECT_FAILURE_PERCENT", "MESH_INJECT_DELAY_MS", "GRPC_XDS_BOOTSTRAP"):
        assert name in lines[0], lines[0]
    assert 'CONSUL_HTTP_TOKEN_FILE: cannot read "/nonexistent/probe.token"' in lines[0], lines[0]


# -- logs ------------------------------------------------------------------------------------------


def test_every_log_line_is_json_with_the_contract_keys_and_trace_ids(world: Mesh, language: str) -> None:
    probe = world.start_probe(language)
    with pytest.raises(grpc.RpcError):
        probe.echo("boom", failure=Failure.FAILURE_UNEXPECTED, metadata=traceparent(), timeout=5)
    poll_until(lambda: [r for r in probe.logs() if r.get("trace_id") == TRACE_ID and r["severity"] == "ERROR"],
               10, 0.1, "the unexpected error logged with the caller's trace id")
    for record in probe.logs():
        assert record.keys() >= REQUIRED_LOG_KEYS, record
        assert record["severity"] in SEVERITIES, record
        assert record["service.name"] == probe.service and record["service.instance.id"] == probe.instance_id
    logged = next(r for r in probe.logs() if r.get("trace_id") == TRACE_ID)
    assert len(logged["span_id"]) == 16 and int(logged["span_id"], 16)


# -- life of an instance ---------------------------------------------------------------------------


def test_serving_and_registered_only_after_the_listener_arrives(world: Mesh, language: str) -> None:
    xds_port = free_port()
    probe = world.start_probe(language, wait=False, xds_address=f"127.0.0.1:{xds_port}")
    assert poll_until(lambda: probe.health(), 30, 0.1, "the admin port answering") == "NOT_SERVING"
    with pytest.raises(grpc.RpcError) as caught:
        probe.echo(timeout=1)
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    assert probe.instance_id not in world.consul.passing(probe.service)
    assert probe.health() == "NOT_SERVING"

    start_control_plane(world.procs, world.consul.http_addr, port=xds_port, name=f"xds-late-{language}")
    world.wait_registered(probe)
    assert probe.echo("now").message == "now"


def test_a_lost_listener_turns_health_not_serving_and_back(world: Mesh, language: str) -> None:
    """The control plane withdraws a server's listener when it does not govern the server's
    namespace; a control plane that restarts with another MESH_NAMESPACE does exactly that."""
    xds_port = free_port()
    name = f"xds-{language}"
    governing = start_control_plane(world.procs, world.consul.http_addr, port=xds_port, name=f"{name}-1")
    probe = world.start_probe(language, xds_address=f"127.0.0.1:{xds_port}")
    governing.proc.stop()

    foreign = start_control_plane(world.procs, world.consul.http_addr, port=xds_port, name=f"{name}-2",
                                  env={"MESH_NAMESPACE": "elsewhere"})
    poll_until(lambda: probe.health() == "NOT_SERVING", 15, 0.1, "NOT_SERVING once the listener is withdrawn")
    with pytest.raises(grpc.RpcError):
        probe.echo(timeout=1)
    foreign.proc.stop()

    start_control_plane(world.procs, world.consul.http_addr, port=xds_port, name=f"{name}-3")
    poll_until(lambda: probe.health() == "SERVING", 15, 0.1, "SERVING again once the listener is back")
    assert probe.echo("back").message == "back"
    assert probe.proc.alive()


def test_the_registration_body(world: Mesh, language: str) -> None:
    probe = world.start_probe(language)
    base = f"http://{world.consul.http_addr}/v1/agent"
    with urllib.request.urlopen(f"{base}/service/{probe.instance_id}", timeout=5) as reply:
        service = json.load(reply)
    assert (service["ID"], service["Service"], service["Address"], service["Port"]) == (
        probe.instance_id, probe.service, "127.0.0.1", probe.port)
    assert service["Tags"] == ["v1", language]
    assert service["Meta"] == {"version": "v1", "language": language, "admin_port": str(probe.admin_port),
                               "protocol": "grpc"}
    with urllib.request.urlopen(f"{base}/checks", timeout=5) as reply:
        checks = [c for c in json.load(reply).values() if c["ServiceID"] == probe.instance_id]
    assert len(checks) == 1, checks
    check = checks[0]
    # The agent shows no check target or deregistration delay, but a passing plaintext gRPC check
    # says what it reached.
    assert check["Type"] == "grpc" and check["Status"] == "passing"
    assert f"127.0.0.1:{probe.admin_port}" in check["Output"], check["Output"]
    assert (check["Interval"], check["Timeout"]) == ("1s", "1s")


def test_the_keeper_registers_again_after_consul_forgets(world: Mesh, language: str, tmp_path) -> None:
    own = ConsulAgent(tmp_path / "consul").start()
    try:
        probe = world.start_probe(language, consul=own)
        own.stop()
        own.forget()
        own.start()  # empty, as the runner's `consul agent -dev` comes back
        assert probe.instance_id not in own.passing(probe.service)
        world.wait_registered(probe, consul=own, timeout=20)
        assert len(unreachable_warnings(probe)) <= 1, unreachable_warnings(probe)
    finally:
        own.stop()


def test_consul_down_at_start_is_retried_and_said_once(world: Mesh, language: str, tmp_path) -> None:
    later = ConsulAgent(tmp_path / "consul")  # ports chosen, agent not started
    try:
        probe = world.start_probe(language, wait=False, consul=later)
        poll_until(lambda: probe.health() == "SERVING", 30, 0.1, "SERVING without Consul")
        poll_until(lambda: unreachable_warnings(probe), 15, 0.1, "a WARN that Consul is unreachable")
        assert probe.echo("served").message == "served"
        later.start()
        world.wait_registered(probe, consul=later, timeout=20)
        assert len(unreachable_warnings(probe)) == 1, unreachable_warnings(probe)
    finally:
        later.stop()


def test_sigterm_goes_not_serving_deregisters_and_exits_0(world: Mesh, language: str) -> None:
    probe = world.start_probe(language)
    seen: list[str] = []
    channel = probe.admin()
    watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))

    def follow() -> None:
        try:
            for reply in watch:
                seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
        except grpc.RpcError:
            pass

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    poll_until(lambda: seen == ["SERVING"], 5, 0.05, "the Watch stream's first answer")
    probe.proc.send_signal(signal.SIGTERM)
    poll_until(lambda: "NOT_SERVING" in seen, 10, 0.05, "NOT_SERVING on the Watch stream")
    poll_until(lambda: probe.instance_id not in world.consul.passing(probe.service)
               and not world.consul.client.agent.services().get(probe.instance_id), 10, 0.1, "deregistered")
    assert probe.proc.popen.wait(15) == 0
    channel.close()


# -- errors ----------------------------------------------------------------------------------------

EXPECTED_ERRORS = {
    Failure.FAILURE_INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Failure.FAILURE_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Failure.FAILURE_UNEXPECTED: grpc.StatusCode.INTERNAL,
}


def check_error(error: grpc.RpcError, failure: int, probe) -> None:
    assert error.code() == EXPECTED_ERRORS[failure], (error.code(), error.details())
    details = details_of(error)
    if failure == Failure.FAILURE_INVALID_ARGUMENT:
        assert error.details() == "invalid request: message: rejected as asked"
        assert [type(d) for d in details] == [error_details_pb2.BadRequest]
        assert [(v.field, v.description) for v in details[0].field_violations] == [("message", "rejected as asked")]
    elif failure == Failure.FAILURE_NOT_FOUND:
        assert error.details() == 'message "ghost" not found'
        assert [type(d) for d in details] == [error_details_pb2.ErrorInfo]
        assert (details[0].reason, details[0].domain) == ("MESSAGE_NOT_FOUND", f"{probe.service}.shop.local")
        assert dict(details[0].metadata) == {"resource_ids": "ghost"}
    else:
        assert (error.details(), details) == ("internal error", [])


@pytest.mark.parametrize("failure", list(EXPECTED_ERRORS), ids=lambda f: Failure.Name(f))
def test_errors_on_unary_calls(called: Probe, failure: int) -> None:
    probe = called
    with pytest.raises(grpc.RpcError) as caught:
        probe.echo("ghost", failure=failure, timeout=5)
    check_error(caught.value, failure, probe)
    assert probe.proc.alive(), "a failing handler must not take the process down"


@pytest.mark.parametrize("failure", list(EXPECTED_ERRORS), ids=lambda f: Failure.Name(f))
def test_errors_on_streaming_calls_after_the_messages(called: Probe, failure: int) -> None:
    probe = called
    received = []
    with probe.channel() as channel, pytest.raises(grpc.RpcError) as caught:
        stream = conformance_pb2_grpc.ConformanceServiceStub(channel).EchoStream(
            conformance_pb2.EchoStreamRequest(message="ghost", count=2, failure=failure), timeout=5)
        for reply in stream:
            received.append((reply.message, reply.index))
    assert received == [("ghost", 0), ("ghost", 1)]
    check_error(caught.value, failure, probe)
    with probe.channel() as channel:
        ok = list(conformance_pb2_grpc.ConformanceServiceStub(channel).EchoStream(
            conformance_pb2.EchoStreamRequest(message="fine", count=3), timeout=5))
    assert [r.index for r in ok] == [0, 1, 2]


def test_a_stream_may_end_before_its_first_message(called: Probe) -> None:
    probe = called
    with probe.channel() as channel:
        stub = conformance_pb2_grpc.ConformanceServiceStub(channel)
        assert list(stub.EchoStream(conformance_pb2.EchoStreamRequest(message="none", count=0), timeout=5)) == []
        for failure in EXPECTED_ERRORS:
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.EchoStream(conformance_pb2.EchoStreamRequest(message="ghost", count=0, failure=failure),
                                     timeout=5))
            check_error(caught.value, failure, probe)
    assert probe.echo("still here", timeout=5).message == "still here"


def server_spans(world: Mesh, trace_id: str, service: str) -> list[dict]:
    """The server spans `service` exported for the trace (one per attempt it answered)."""
    named = {"key": "service.name", "value": {"stringValue": service}}
    return [span for resource in world.jaeger.resource_spans(trace_id) if named in resource["resource"]["attributes"]
            for scope in resource["scopeSpans"] for span in scope["spans"] if span["kind"] in (2, "SPAN_KIND_SERVER")]


def test_a_python_upstreams_unavailable_is_retried_by_the_callers_retry_policy(world: Mesh, language: str) -> None:
    """The Python runtime answers errors Trailers-Only (no headers before the status), so the
    caller's xDS retry policy (the route's default: 2 retries on unavailable) retries them: a
    status after headers commits the call (gRFC A6) and is never retried. Its xDS-enabled server
    survives them (grpcio 1.85 aborts on one unless mesh/runtime/core_experiments.py ran first)."""
    upstream = world.start_probe("python", extra_env={"MESH_INJECT_FAILURE_PERCENT": "100"})
    caller = world.start_probe(language, peers={upstream.service: SERVICE_PORT})
    trace_id = f"{os.getpid():08x}{id(caller):024x}"[-32:]
    with pytest.raises(grpc.RpcError) as caught:
        caller.echo("relay", relay_to=upstream.service, metadata=traceparent(trace_id), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, (caught.value.code(), caught.value.details())
    assert "injected failure" in caught.value.details()
    poll_until(lambda: len(server_spans(world, trace_id, upstream.service)) >= 3, 20, 0.2,
               f"three attempts at {upstream.service} in trace {trace_id}")
    time.sleep(1)  # a fourth attempt would be a bug: give its span the time to arrive
    assert len(server_spans(world, trace_id, upstream.service)) == 3
    assert upstream.proc.alive() and upstream.health() == "SERVING"
    # and Trailers-Only on a stream failing before its first message
    with upstream.channel() as channel, pytest.raises(grpc.RpcError) as caught:
        list(conformance_pb2_grpc.ConformanceServiceStub(channel).EchoStream(
            conformance_pb2.EchoStreamRequest(message="s", count=2), timeout=5))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert upstream.proc.alive()


# -- calls between services ------------------------------------------------------------------------


def test_the_callers_deadline_bounds_every_outbound_call(world: Mesh, language: str) -> None:
    peer = world.start_probe(language)
    probe = world.start_probe(language, peers={peer.service: SERVICE_PORT}, extra_env={"MESH_CALL_TIMEOUT": "4"})

    bounded = probe.echo("relay", relay_to=peer.service, timeout=3)
    assert bounded.relayed.instance_id == peer.instance_id  # through xDS, to the peer
    assert 2000 < bounded.deadline_remaining_ms <= 3000 + ROUNDING_MS
    # the relayed hop rounds its grpc-timeout up again, so it may see a millisecond or two more
    assert 0 < bounded.relayed.deadline_remaining_ms <= bounded.deadline_remaining_ms + ROUNDING_MS

    unbounded = probe.echo("relay", relay_to=peer.service, timeout=None)
    assert unbounded.deadline_remaining_ms == 0
    assert 3000 < unbounded.relayed.deadline_remaining_ms <= 4000 + ROUNDING_MS  # MESH_CALL_TIMEOUT


def test_routing_headers_travel_to_the_outbound_calls(world: Mesh, language: str) -> None:
    """Istio routes on request headers (x-user-tier: beta -> pricing v2): the listed ones must reach
    every hop, the others none."""
    # The peer lists x-canary too, so that it would report x-canary had the probe passed it on.
    peer = world.start_probe(language, extra_env={"MESH_PROPAGATE_HEADERS": "x-user-tier,x-canary"})
    probe = world.start_probe(language, peers={peer.service: SERVICE_PORT})  # the default: x-user-tier
    reply = probe.echo("relay", relay_to=peer.service, metadata=(("x-user-tier", "beta"), ("x-canary", "yes")),
                       timeout=5)
    assert dict(reply.headers) == {"x-user-tier": "beta"}
    assert reply.relayed.instance_id == peer.instance_id
    assert dict(reply.relayed.headers) == {"x-user-tier": "beta"}

    plain = probe.echo("relay", relay_to=peer.service, timeout=5)
    assert (dict(plain.headers), dict(plain.relayed.headers)) == ({}, {})


def test_an_outbound_calls_own_routing_header_wins(world: Mesh, language: str) -> None:
    peer = world.start_probe(language)
    probe = world.start_probe(language, peers={peer.service: SERVICE_PORT})
    reply = probe.echo("relay", relay_to=peer.service, relay_metadata={"x-user-tier": "gold"},
                       metadata=(("x-user-tier", "beta"),), timeout=5)
    assert dict(reply.headers) == {"x-user-tier": "beta"}
    assert dict(reply.relayed.headers) == {"x-user-tier": "gold"}


def test_an_undeclared_peer_is_an_error_that_names_the_variable(world: Mesh, language: str) -> None:
    probe = world.start_probe(language)
    with pytest.raises(grpc.RpcError) as caught:
        probe.echo("relay", relay_to="nowhere", timeout=5)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    poll_until(lambda: [r for r in probe.logs() if "MESH_SERVICE_PORTS" in json.dumps(r)], 5, 0.1,
               "a log line naming MESH_SERVICE_PORTS")


def test_without_xds_a_plain_server_serves_and_peers_are_dialled_by_dns_name(world: Mesh, language: str) -> None:
    """MESH_XDS=off (the sidecar overlay): no bootstrap, a plain business server that serves and
    registers with no control plane, and dial() to the Kubernetes Service's DNS name. No
    *.svc.cluster.local resolves here, so the relay cannot connect; its target is read from channelz."""
    probe = world.start_probe(language, peers={"peer": SERVICE_PORT},
                              extra_env={"MESH_XDS": "off", "GRPC_XDS_BOOTSTRAP": None, "MESH_NAMESPACE": "shop"})
    assert "GRPC_XDS_BOOTSTRAP" not in probe.env
    assert probe.echo("plain", timeout=5).message == "plain"
    with pytest.raises(grpc.RpcError) as caught:
        probe.echo("relay", relay_to="peer", timeout=2)
    # the deadline ends it (from Go possibly CANCELLED: grpc-go resets the stream at the deadline first)
    assert caught.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE,
                                   grpc.StatusCode.CANCELLED), caught.value

    def targets() -> list[str]:
        with probe.admin() as channel:
            reply = channelz_pb2_grpc.ChannelzStub(channel).GetTopChannels(
                channelz_pb2.GetTopChannelsRequest(start_channel_id=0), timeout=2)
        return [c.data.target for c in reply.channel]

    poll_until(lambda: "dns:///peer.shop.svc.cluster.local:50051" in targets(), 5, 0.1,
               "channelz listing the channel to dns:///peer.shop.svc.cluster.local:50051")
    assert not [t for t in targets() if t.startswith("xds:")], targets()


# -- injected failures -----------------------------------------------------------------------------


def injecting_warnings(probe) -> list[str]:
    return [r["message"] for r in probe.logs() if r["severity"] == "WARN" and r["message"].startswith("injecting failures")]


def test_injected_failures_answer_unavailable_while_health_stays_serving(world: Mesh, language: str) -> None:
    probe = world.start_probe(language, extra_env={"MESH_INJECT_FAILURE_PERCENT": "100"})  # SERVING, passing in Consul
    injected = (grpc.StatusCode.UNAVAILABLE, "injected failure (MESH_INJECT_FAILURE_PERCENT=100)")
    with probe.channel() as channel:
        stub = conformance_pb2_grpc.ConformanceServiceStub(channel)
        for _ in range(20):
            with pytest.raises(grpc.RpcError) as caught:
                stub.Echo(conformance_pb2.EchoRequest(message="x"), timeout=5)
            assert (caught.value.code(), caught.value.details()) == injected
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.EchoStream(conformance_pb2.EchoStreamRequest(message="s", count=2), timeout=5))
        assert (caught.value.code(), caught.value.details()) == injected
    assert probe.health() == probe.health("polymesh.conformance.v1.ConformanceService") == "SERVING"
    assert probe.instance_id in world.consul.passing(probe.service)
    assert poll_until(lambda: injecting_warnings(probe), 5, 0.1, "the WARN that failures are injected") == [
        "injecting failures: MESH_INJECT_FAILURE_PERCENT=100, MESH_INJECT_DELAY_MS=0"]


def test_injected_failures_hit_their_share_of_calls(world: Mesh, language: str) -> None:
    probe = world.start_probe(language, extra_env={"MESH_INJECT_FAILURE_PERCENT": "50"})
    failed = 0
    with probe.channel() as channel:
        echo = conformance_pb2_grpc.ConformanceServiceStub(channel).Echo
        for _ in range(400):
            try:
                echo(conformance_pb2.EchoRequest(message="x"), timeout=5)
            except grpc.RpcError as error:
                assert (error.code(), error.details()) == (
                    grpc.StatusCode.UNAVAILABLE, "injected failure (MESH_INJECT_FAILURE_PERCENT=50)")
                failed += 1
    assert 42 <= failed / 4 <= 58, f"{failed} of 400 calls failed"  # 50 +- 8 points: over 3 sigma


def test_an_injected_delay_comes_before_the_handler_within_the_callers_deadline(world: Mesh, language: str) -> None:
    probe = world.start_probe(language, extra_env={"MESH_INJECT_DELAY_MS": "300"})
    with probe.channel() as channel:
        echo = conformance_pb2_grpc.ConformanceServiceStub(channel).Echo
        echo(conformance_pb2.EchoRequest(message="connect"), timeout=5)
        started = time.monotonic()
        reply = echo(conformance_pb2.EchoRequest(message="slow"), timeout=5)
        assert 0.3 <= time.monotonic() - started < 0.6
        assert reply.deadline_remaining_ms <= 5000 - 300 + ROUNDING_MS  # the handler ran after the delay

        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            echo(conformance_pb2.EchoRequest(message="late"), timeout=0.1)
        # As any call past its deadline: a grpc-go server resets the stream at the deadline, which a
        # client whose own timer has not fired yet reports as CANCELLED.
        past_deadline = {grpc.StatusCode.DEADLINE_EXCEEDED} | ({grpc.StatusCode.CANCELLED} if language == "go" else set())
        assert caught.value.code() in past_deadline, caught.value
        assert time.monotonic() - started < 0.3
    started = time.monotonic()
    assert probe.health() == "SERVING"
    assert time.monotonic() - started < 0.3, "health on the admin port waits for nothing"
    assert poll_until(lambda: injecting_warnings(probe), 5, 0.1, "the WARN that failures are injected") == [
        "injecting failures: MESH_INJECT_FAILURE_PERCENT=0, MESH_INJECT_DELAY_MS=300"]


# -- admin port: health, reflection, CSDS; none of it traced ---------------------------------------


def test_reflection_lists_the_business_and_admin_services(called: Probe) -> None:
    probe = called
    with probe.admin() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"polymesh.conformance.v1.ConformanceService", "grpc.health.v1.Health",
            "envoy.service.status.v3.ClientStatusDiscoveryService"} <= names, names


def csds_configs(probe) -> dict[tuple[str, str], csds_pb2.ClientConfig.GenericXdsConfig]:
    with probe.admin() as channel:
        reply = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel).FetchClientStatus(
            csds_pb2.ClientStatusRequest(), timeout=5)
    return {(c.type_url.rsplit(".", 1)[-1], c.name): c for config in reply.config for c in config.generic_xds_configs}


def status_name(config: csds_pb2.ClientConfig.GenericXdsConfig) -> str:
    field = config.DESCRIPTOR.fields_by_name["client_status"]
    return field.enum_type.values_by_number[config.client_status].name


def test_csds_on_the_admin_port_shows_what_the_instance_received(world: Mesh, language: str) -> None:
    peer = world.start_probe(language)
    probe = world.start_probe(language, peers={peer.service: SERVICE_PORT})
    probe.echo("relay", relay_to=peer.service, timeout=5)
    configs = csds_configs(probe)
    server_listener = configs[("Listener", f"{SERVER_LISTENER_PREFIX}127.0.0.1:{probe.port}")]
    assert status_name(server_listener) == "ACKED", server_listener
    client_listener = configs[("Listener", f"{peer.service}:{SERVICE_PORT}")]
    assert status_name(client_listener) == "ACKED", client_listener
    assert {kind for kind, _ in configs} >= {"Listener", "RouteConfiguration", "Cluster", "ClusterLoadAssignment"}


def test_health_reflection_and_csds_are_not_traced(world: Mesh, language: str) -> None:
    probe = world.start_probe(language)
    trace_id = f"{os.getpid():08x}{id(probe):024x}"[-32:]
    metadata = traceparent(trace_id)
    with probe.admin() as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), metadata=metadata, timeout=5)
        list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata, timeout=5))
        csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel).FetchClientStatus(
            csds_pb2.ClientStatusRequest(), metadata=metadata, timeout=5)
    probe.echo("traced", metadata=metadata, timeout=5)

    def span_names() -> list[str]:
        return [span["name"] for resource in world.jaeger.resource_spans(trace_id)
                for scope in resource["scopeSpans"] for span in scope["spans"]]

    names = poll_until(span_names, 20, 0.2, f"the Echo span of trace {trace_id} in Jaeger")
    assert len(names) == 1 and names[0].endswith("ConformanceService/Echo"), names
