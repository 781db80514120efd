"""Consul runs with ACLs, default deny (mesh/runner/consul_acl.py): each service's token writes its
own service only, the control plane's only reads, and no token sees nothing. Against the mesh's
real agent, with the tokens the runner wrote into the run folder."""

from __future__ import annotations

import itertools

import httpx
import pytest

_numbers = itertools.count(1)


@pytest.fixture
def consul(mesh) -> httpx.Client:
    with httpx.Client(base_url=mesh.consul, timeout=5) as client:
        yield client


def _as(mesh, name: str | None) -> dict[str, str]:
    return {"X-Consul-Token": mesh.consul_token(name)} if name else {}


def _registered(consul: httpx.Client, mesh, instance_id: str) -> bool:
    reply = consul.get(f"/v1/agent/service/{instance_id}", headers=_as(mesh, "read"))
    assert reply.status_code in (200, 404), reply.text
    return reply.status_code == 200


def _throwaway(service: str) -> dict:
    """An instance nobody serves, its check critical from the start: never an endpoint of the mesh."""
    return {"ID": f"{service}-acl-test-{next(_numbers)}", "Name": service, "Address": "127.0.0.1", "Port": 9,
            "Check": {"TTL": "60s", "Status": "critical", "DeregisterCriticalServiceAfter": "1m"}}


def test_a_services_token_cannot_deregister_or_register_another_service(mesh, consul):
    assert _registered(consul, mesh, "catalog-v1")
    refused = consul.put("/v1/agent/service/deregister/catalog-v1", headers=_as(mesh, "payments"))
    assert refused.status_code == 403 and "Permission denied" in refused.text, refused.text
    assert "lacks permission 'service:write' on \"catalog\"" in refused.text
    assert _registered(consul, mesh, "catalog-v1")

    impostor = _throwaway("catalog")
    refused = consul.put("/v1/agent/service/register", json=impostor, headers=_as(mesh, "payments"))
    assert refused.status_code == 403 and "Permission denied" in refused.text, refused.text
    assert not _registered(consul, mesh, impostor["ID"])


def test_a_services_token_registers_and_deregisters_its_own_service(mesh, consul):
    mine = _throwaway("payments")
    made = consul.put("/v1/agent/service/register", json=mine, headers=_as(mesh, "payments"))
    assert made.status_code == 200, made.text
    try:
        assert _registered(consul, mesh, mine["ID"])
    finally:
        gone = consul.put(f"/v1/agent/service/deregister/{mine['ID']}", headers=_as(mesh, "payments"))
    assert gone.status_code == 200, gone.text
    assert not _registered(consul, mesh, mine["ID"])


def test_the_control_planes_token_reads_the_catalog_and_health_and_writes_nothing(mesh, consul):
    headers = _as(mesh, "control-plane")
    health = consul.get("/v1/health/service/catalog", params={"passing": "1"}, headers=headers)
    assert health.status_code == 200
    assert {entry["Service"]["ID"] for entry in health.json()} >= {"catalog-v1", "catalog-v2"}
    services = consul.get("/v1/catalog/services", headers=headers).json()
    assert {"catalog", "payments", "pricing", "inventory", "orders", "gateway"} <= set(services)

    writes = [
        consul.put("/v1/agent/service/register", json=_throwaway("catalog"), headers=headers),
        consul.put("/v1/agent/service/deregister/catalog-v1", headers=headers),
        consul.put("/v1/catalog/deregister", json={"Node": "polymesh", "ServiceID": "payments"}, headers=headers),
        consul.put("/v1/kv/polymesh-acl-test", content=b"x", headers=headers),
        consul.get("/v1/acl/tokens", headers=headers),
    ]
    assert [reply.status_code for reply in writes] == [403] * len(writes), [reply.text for reply in writes]
    assert _registered(consul, mesh, "catalog-v1")


def test_without_a_token_consul_shows_nothing_and_changes_nothing(mesh, consul):
    assert consul.get("/v1/catalog/services").json() == {}
    assert consul.get("/v1/health/service/catalog").json() == []
    assert consul.get("/v1/agent/checks").json() == {}
    refused = consul.put("/v1/agent/service/deregister/catalog-v1")
    assert refused.status_code == 403 and "anonymous token lacks permission" in refused.text
    refused = consul.put("/v1/agent/service/deregister/catalog-v1", headers={"X-Consul-Token": "not-a-token"})
    assert refused.status_code == 403 and "ACL not found" in refused.text
    assert _registered(consul, mesh, "catalog-v1")


def test_the_ui_line_says_how_to_log_in_with_a_read_only_token(mesh, consul):
    line = next(line for line in mesh.up_output.splitlines() if "consul UI" in line)
    path = str(mesh.run_dir / "consul" / "tokens" / "read.token")
    assert f"{mesh.consul}/ui" in line and "Log in" in line and path in line, line
    headers = _as(mesh, "read")
    assert "catalog" in consul.get("/v1/catalog/services", headers=headers).json()
    refused = consul.put("/v1/agent/service/deregister/catalog-v1", headers=headers)
    assert refused.status_code == 403, refused.text

