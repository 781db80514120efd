"""Is a process ready? HTTP 200, gRPC health SERVING, or its Consul checks passing. And what the
control plane says is wrong (its StatusService), for `make status`."""

from __future__ import annotations

import json
import pathlib
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from polymesh.controlplane.v1 import status_pb2, status_pb2_grpc

TIMEOUT = 0.5


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as reply:
            body = reply.read()
            # Consul answers /v1/status/leader with "" until it has elected itself (istiod's /ready: an
            # empty 200 when ready).
            return bool(reply.status == 200 and body.strip() != b'""')
    except (OSError, urllib.error.URLError):
        return False


def pid_file_ok(path: str, pid: int | None) -> bool:
    """The process `pid` wrote its pid into `path` once ready (mesh/runner/certs.py); a file an
    earlier run left holds another pid."""
    try:
        return pid is not None and pathlib.Path(path).read_text().strip() == str(pid)
    except OSError:
        return False


def grpc_serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            # types-grpcio-health-checking's HealthStub declares no methods
            reply: health_pb2.HealthCheckResponse = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def consul_checks(consul_http: str, token: str = "") -> dict[str, str]:
    """Service id -> worst check status among that service's checks on the local agent, as far as
    `token` may read them (Consul leaves out what it may not: nothing, without a token)."""
    request = urllib.request.Request(f"http://{consul_http}/v1/agent/checks", headers={"X-Consul-Token": token} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            checks = json.load(reply)
    except (OSError, urllib.error.URLError, ValueError):
        return {}
    order = {"passing": 0, "warning": 1, "critical": 2}
    worst: dict[str, str] = {}
    for check in checks.values():
        sid = check.get("ServiceID")
        if sid and order.get(check["Status"], 2) >= order.get(worst.get(sid, "passing"), 0):
            worst[sid] = check["Status"]
    return worst


def control_plane_problems(address: str) -> tuple[list[str], list[str]]:
    """(errors, warnings), one line each, from the control plane's StatusService: rejected Istio
    resources, failing translations and tasks; fields it ignores. Empty when it does not answer
    (the status table shows its health then)."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = status_pb2_grpc.StatusServiceStub(channel).GetStatus(status_pb2.GetStatusRequest(), timeout=TIMEOUT)
        except grpc.RpcError:
            return [], []
    errors = [f"rejected (its last good version serves): {p.file}: {p.resource or 'the whole file'}: {p.reason}"
              for p in reply.rejected]
    errors += [f"translation failing (its last good resources serve): {p.service}: {p.reason}"
               for p in reply.translation_failures]
    errors += [f"task failing (restarting): {p.task}: {p.reason}" for p in reply.failing_tasks]
    warnings = [f"ignored: {p.file}: {p.resource}: {p.field}: {p.reason}" for p in reply.warnings]
    return errors, warnings
