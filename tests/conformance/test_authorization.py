"""README "Istio resources", docs/runtime-contract.md: an AuthorizationPolicy selecting a workload
is enforced by its xDS-managed server in every language (RBAC HTTP filters before the router on
its inbound listener: DENY, then ALLOW, Istio's order). Plaintext, so path rules only (principals
need mTLS).

A probe of each language is selected by its `app` label (its service name); a second probe of the
same language is not, and answers everything throughout. Each check is a direct call on a fresh
connection (a server applies a new listener to new connections; old ones are drained):
- DENY on EchoStream: EchoStream PERMISSION_DENIED, Echo answered;
- the file removed: both answered again;
- then ALLOW on Echo only: EchoStream PERMISSION_DENIED (no ALLOW rule matches), Echo answered;
- the file removed: both answered again.
Health and reflection on the admin port are never affected.
Each test runs its own control plane on a folder of Istio resources it writes.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from conftest import Mesh, Probe
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from polymesh.conformance.v1 import conformance_pb2, conformance_pb2_grpc
from support.poll import poll_until
from support.xds import start_control_plane

pytestmark = pytest.mark.integration

ECHO_STREAM = "/polymesh.conformance.v1.ConformanceService/EchoStream"
ECHO = "/polymesh.conformance.v1.ConformanceService/Echo"
FOLLOW_LIMIT = 10.0  # seconds for a written or removed policy to be enforced


def authorization_policy(name: str, service: str, action: str, path: str) -> str:
    return (f"apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}}}\n"
            f"spec: {{selector: {{matchLabels: {{app: {service}}}}}, action: {action}, "
            f"rules: [{{to: [{{operation: {{paths: [\"{path}\"]}}}}]}}]}}\n")


def write(path: Path, text: str) -> None:
    """Replace the file atomically, as an editor saving does."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def outcomes(probe: Probe) -> tuple[str, str]:
    """(Echo, EchoStream) as the probe's business port answers them on a fresh connection."""
    out = []
    with probe.channel() as channel:
        stub = conformance_pb2_grpc.ConformanceServiceStub(channel)
        calls = (lambda: stub.Echo(conformance_pb2.EchoRequest(message="hi"), timeout=5),
                 lambda: list(stub.EchoStream(conformance_pb2.EchoStreamRequest(message="hi", count=2), timeout=5)))
        for call in calls:
            try:
                call()
                out.append("OK")
            except grpc.RpcError as error:
                out.append(error.code().name)
    return out[0], out[1]


def admin_unaffected(probe: Probe) -> None:
    assert probe.health() == "SERVING"
    with probe.admin() as channel:
        replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        services = {s.name for reply in replies for s in reply.list_services_response.service}
    assert "polymesh.conformance.v1.ConformanceService" in services, services


def test_an_authorization_policy_is_enforced_by_the_selected_server(world: Mesh, language: str, tmp_path: Path,
                                                                    request: pytest.FixtureRequest) -> None:
    istio = tmp_path / "istio"
    istio.mkdir()
    cp = start_control_plane(world.procs, world.consul.http_addr, name=f"xds-{request.node.name}",
                             env={"MESH_ISTIO_DIR": str(istio)})
    probe = world.start_probe(language, xds_address=cp.address)
    bystander = world.start_probe(language, xds_address=cp.address)
    assert outcomes(probe) == ("OK", "OK")

    def enforced(expected: tuple[str, str]) -> None:
        poll_until(lambda: outcomes(probe) == expected, FOLLOW_LIMIT, 0.1, f"{probe.service} answering {expected}")
        assert outcomes(probe) == expected  # and it stays so
        assert outcomes(bystander) == ("OK", "OK")
        admin_unaffected(probe)
        assert probe.proc.alive(), f"{probe.instance_id} exited"

    deny, allow = istio / "deny.yaml", istio / "allow.yaml"
    write(deny, authorization_policy("deny-stream", probe.service, "DENY", ECHO_STREAM))
    enforced(("OK", "PERMISSION_DENIED"))

    deny.unlink()  # everything again first, so that the ALLOW step is seen to be the ALLOW policy's doing
    enforced(("OK", "OK"))
    write(allow, authorization_policy("allow-echo", probe.service, "ALLOW", ECHO))
    enforced(("OK", "PERMISSION_DENIED"))

    allow.unlink()
    enforced(("OK", "OK"))
