"""Istio resources in MESH_ISTIO_DIR govern real grpcio, grpc-go and grpc-js xDS clients.

Two backends of `catalog` are registered in Consul with `version` Meta v1 and v2; they answer
with their own name, so each probe's output says which subset served each call. The control
plane reads a folder the test writes (DestinationRule subsets, a VirtualService) and is observed
through the probes, its log and its health.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from support.backends import start_catalog_backend
from support.istio import DESTINATION_RULE, default_route, virtual_service, weighted
from support.istio import write_atomically as write
from support.poll import poll_until
from support.xds import write_bootstrap
from support.xds_probes import LANGUAGES, calls, probe_command

pytestmark = pytest.mark.integration

SERVICE_PORT = 7000
TARGET = f"xds:///catalog:{SERVICE_PORT}"
VERSIONS = ("v1", "v2")
CALLS = 1000  # per language, for a split
TOLERANCE = 5.0  # percentage points
RELOAD_LIMIT = 1.0  # seconds from a file write to the clients following it
HEADER = ("x-user-tier", "beta")

def header_route(subset: str) -> str:
    return (f"- match:\n  - headers:\n      {HEADER[0]}: {{exact: {HEADER[1]}}}\n"
            f"  route:\n  - destination: {{host: catalog, subset: {subset}}}\n")


@pytest.fixture
def backends(consul_agent):
    servers = {version: start_catalog_backend(version) for version in VERSIONS}
    for version, (_, port) in servers.items():
        consul_agent.register("catalog", f"catalog-{version}", port, meta={"version": version, "language": "python"})
    yield servers
    for server, _ in servers.values():
        server.stop(0)


@pytest.fixture
def istio_dir(tmp_path) -> Path:
    directory = tmp_path / "istio"
    directory.mkdir()
    (directory / "catalog-rule.yaml").write_text(DESTINATION_RULE)
    return directory


def start_probe(language: str, procs, tmp_path, xds_address: str, request, name: str, headers=()) -> object:
    command = probe_command(language, TARGET, interval_ms=1, headers=headers,
                            go_probe=request.getfixturevalue("go_probe") if language == "go" else None,
                            node_probe=request.getfixturevalue("node_probe") if language == "node" else None)
    bootstrap = write_bootstrap(tmp_path / f"{name}.json", xds_address, instance_id=name, service="orders")
    return procs.start(name, command, env={"GRPC_XDS_BOOTSTRAP": str(bootstrap)})


def at_least(proc, count: int, since: float = 0.0) -> list[str] | None:
    """`count` calls from `since`, leaving out the deadline errors of a client still waiting for its
    first xDS answers (a loaded machine can take a probe's 1 s): those are no routing decision."""
    seen = [b for _, b in calls(proc, since)]
    while seen and seen[0].startswith("error") and "deadline" in seen[0].lower():
        seen.pop(0)
    return seen if len(seen) >= count else None


def share(seen: list[str], version: str) -> float:
    return 100.0 * seen.count(version) / len(seen)


def test_weighted_split_90_10_in_every_language(backends, istio_dir, consul_agent, start_control_plane, procs,
                                                 tmp_path, request):
    weights = {"v1": 90, "v2": 10}
    (istio_dir / "catalog-vs.yaml").write_text(virtual_service(weighted(weights)))
    cp = start_control_plane(consul_agent.http_addr, env={"MESH_ISTIO_DIR": str(istio_dir)})
    probes = {language: start_probe(language, procs, tmp_path, cp.address, request, f"split-{language}")
              for language in LANGUAGES}
    figures = {}
    for language, proc in probes.items():
        # from the first call (the policy was in force before any client connected)
        seen = poll_until(lambda: at_least(proc, CALLS), 120, 0.2, f"{CALLS} calls from {language}")
        assert not [b for b in seen if b.startswith("error")], f"{language}: errors {seen[:3]}"
        figures[language] = {version: share(seen, version) for version in VERSIONS} | {"calls": len(seen)}
    print("\nweighted split 90/10, share of calls per subset (%):")
    for language, figure in figures.items():
        print(f"  {language:<7} v1 {figure['v1']:5.1f}  v2 {figure['v2']:5.1f}  over {figure['calls']} calls")
    for language, figure in figures.items():
        for version, weight in weights.items():
            assert abs(figure[version] - weight) <= TOLERANCE, f"{language}: {version} got {figure[version]:.1f}%"
    assert cp.health("mesh.xds.policy") == "SERVING"
    assert not [e for e in cp.logs() if "NACK" in e["message"]], "a client rejected a resource"


def test_header_routing_hot_reload_and_an_invalid_edit(backends, istio_dir, consul_agent, start_control_plane, procs,
                                                       tmp_path, request):
    vs_file = istio_dir / "catalog-vs.yaml"
    vs_file.write_text(virtual_service(header_route("v2"), default_route("v1")))
    cp = start_control_plane(consul_agent.http_addr, env={"MESH_ISTIO_DIR": str(istio_dir)})
    probes = {}
    for language in LANGUAGES:
        probes[(language, "beta")] = start_probe(language, procs, tmp_path, cp.address, request, f"beta-{language}",
                                                 [HEADER])
        probes[(language, "plain")] = start_probe(language, procs, tmp_path, cp.address, request, f"plain-{language}")
    enough = 200

    def window(proc, since: float) -> list[str]:
        return poll_until(lambda: at_least(proc, enough, since), 60, 0.1, f"{enough} calls from {proc}")

    # header routing, exact: every call with the header on v2, every call without on v1
    for (language, kind), proc in probes.items():
        seen = window(proc, 0.0)
        expected = "v2" if kind == "beta" else "v1"
        assert seen.count(expected) == len(seen), f"{language} {kind}: {sorted(set(seen))}"

    # hot reload: send the plain calls to v2 too, while the clients run
    written = write(vs_file, virtual_service(header_route("v2"), default_route("v2")))
    latency = {}
    for language in LANGUAGES:
        proc = probes[(language, "plain")]
        first = poll_until(lambda: next((t for t, b in calls(proc, written) if b == "v2"), None), 10, 0.02,
                           f"{language} moving to v2")
        latency[language] = first - written
        after = window(proc, first)
        assert after.count("v2") == len(after), f"{language}: after the reload {sorted(set(after))}"
    print("\nhot reload, file write -> first call that follows it (ms): "
          + ", ".join(f"{language} {seconds * 1000:.0f}" for language, seconds in latency.items()))
    for language, seconds in latency.items():
        assert seconds < RELOAD_LIMIT, f"{language} followed the edit after {seconds:.3f}s"

    # an invalid edit (weights summing to 110): rejected, named, visible in health; v2 keeps serving
    rejected_at = write(vs_file, virtual_service(weighted({"v1": 90, "v2": 20})))
    error = poll_until(lambda: next((e for e in cp.logs() if e["severity"] == "ERROR"
                                     and "rejected" in e["message"]), None), 5, 0.05, "the rejection logged")
    assert str(vs_file) in error["message"] and "VirtualService default/catalog" in error["message"], error
    assert re.search(r"sum to 110, not 100", error["message"]), error
    assert cp.health("mesh.xds.policy") == "NOT_SERVING"
    assert cp.health() == "SERVING"  # the rest of the control plane serves on
    logged_at = time.time()
    for language in LANGUAGES:
        after = window(probes[(language, "plain")], max(logged_at, rejected_at))
        assert after.count("v2") == len(after), f"{language}: the rejected edit changed routing {sorted(set(after))}"

    # the fix clears the error and applies
    fixed_at = write(vs_file, virtual_service(default_route("v1")))
    poll_until(lambda: cp.health("mesh.xds.policy") == "SERVING", 5, 0.05, "the policy health back to SERVING")
    for (language, kind), proc in probes.items():
        first = poll_until(lambda: next((t for t, b in calls(proc, fixed_at) if b == "v1"), None), 10, 0.02,
                           f"{language} {kind} on v1 after the fix")
        after = window(proc, first)
        assert after.count("v1") == len(after), f"{language} {kind}: after the fix {sorted(set(after))}"
    assert any("accepted again" in e["message"] for e in cp.logs())
    assert not [e for e in cp.logs() if "NACK" in e["message"]], "a client rejected a resource"


def acked_cluster(cp, instance: str, name: str, kind=None):
    """The cluster (or another `kind` of resource) `name` as node `instance` last ACKed it (CSDS,
    with contents); None if not ACKed."""
    from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
    from envoy.config.cluster.v3 import cluster_pb2

    kind = kind or cluster_pb2.Cluster
    for config in cp.client_status(with_contents=True).config:
        if config.node.id.split("~")[2] != f"{instance}.default":
            continue
        for generic in config.generic_xds_configs:
            if generic.name == name and generic.client_status == dump_pb2.ACKED and generic.xds_config.Is(
                    kind.DESCRIPTOR):
                found = kind()
                generic.xds_config.Unpack(found)
                return found
    return None


def test_least_request_round_robin_and_ring_hash_on_a_header_are_acked_and_used_by_every_client(
        backends, istio_dir, consul_agent, start_control_plane, procs, tmp_path, request):
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.route.v3 import route_pb2

    rule_file = istio_dir / "catalog-rule.yaml"
    rule_file.write_text(DESTINATION_RULE.replace(
        "  subsets:\n", "  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}\n  subsets:\n"))
    cp = start_control_plane(consul_agent.http_addr, env={"MESH_ISTIO_DIR": str(istio_dir)})
    probes = {language: start_probe(language, procs, tmp_path, cp.address, request, f"lb-{language}",
                                    [("x-user", "alice")]) for language in LANGUAGES}
    cluster = f"outbound|{SERVICE_PORT}||catalog.default.svc.cluster.local"
    enough = 200
    for language, proc in probes.items():
        acked = poll_until(lambda: acked_cluster(cp, f"lb-{language}", cluster), 30, 0.1, f"{language} ACKs CDS")
        assert acked.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN  # what LEAST_REQUEST is served as
        seen = poll_until(lambda: at_least(proc, enough), 30, 0.1, f"{language} calls")
        assert set(seen) == set(VERSIONS), f"{language} round robin: {sorted(set(seen))}"
    assert any("LEAST_REQUEST is served as ROUND_ROBIN" in e["message"] for e in cp.logs())

    changed_at = write(rule_file, DESTINATION_RULE.replace(
        "  subsets:\n", "  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}\n  subsets:\n"))
    for language, proc in probes.items():
        acked = poll_until(lambda: (c := acked_cluster(cp, f"lb-{language}", cluster)) and
                           c.lb_policy == cluster_pb2.Cluster.RING_HASH and c, 10, 0.05, f"{language} ACKs RING_HASH")
        assert acked.ring_hash_lb_config.minimum_ring_size.value > 0
        # the hash policy travels in the route (RDS), which a client may ACK after the cluster
        poll_until(lambda: (r := acked_cluster(cp, f"lb-{language}", cluster, route_pb2.RouteConfiguration)) and
                   r.virtual_hosts[0].routes[0].route.hash_policy, 10, 0.05, f"{language} ACKs the hash policy")
        acked_at = time.time()
        seen = poll_until(lambda: at_least(proc, enough, acked_at), 30, 0.1, f"{language} calls")
        assert len(set(seen)) == 1 and seen[0] in VERSIONS, f"{language}: one header value, {sorted(set(seen))}"
    assert changed_at and not [e for e in cp.logs() if "NACK" in e["message"]], "a client rejected a resource"


@pytest.mark.parametrize("match, expected", [
    ({"headers": {HEADER[0]: {"regex": "b.t."}}, "uri": {"prefix": "/shop.catalog.v1.CatalogService/"}}, "v2"),
    ({"headers": {HEADER[0]: {"prefix": "be"}}, "uri": {"exact": "/shop.catalog.v1.CatalogService/GetProduct"}}, "v2"),
    ({"uri": {"exact": "/shop.catalog.v1.CatalogService/ListProducts"}}, "v1"),
    ({"headers": {HEADER[0]: {"regex": "bet"}}}, "v1"),  # a regex matches the whole value, as in Envoy
], ids=["header-regex+uri-prefix", "header-prefix+uri-exact", "other-method", "partial-regex"])
def test_header_and_grpc_path_matchers_in_every_client(match, expected, backends, istio_dir, consul_agent,
                                                       start_control_plane, procs, tmp_path, request):
    route = (f"- match: [{json.dumps(match)}]\n  route:\n  - destination: {{host: catalog, subset: v2}}\n"
             + default_route("v1"))
    (istio_dir / "catalog-vs.yaml").write_text(virtual_service(route))
    cp = start_control_plane(consul_agent.http_addr, env={"MESH_ISTIO_DIR": str(istio_dir)})
    enough = 100
    probes = {language: start_probe(language, procs, tmp_path, cp.address, request, f"match-{language}", [HEADER])
              for language in LANGUAGES}
    for language, proc in probes.items():
        seen = poll_until(lambda: at_least(proc, enough), 30, 0.1, f"{language} calls")
        assert seen.count(expected) == len(seen), f"{language}: {sorted(set(seen))}"
    assert not [e for e in cp.logs() if "NACK" in e["message"]], "a client rejected a resource"


def test_an_edited_fault_percentage_is_followed_by_every_client(backends, istio_dir, consul_agent,
                                                                 start_control_plane, procs, tmp_path, request):
    """grpcio kept a route's first fault config when only its percentage changed (100% stayed 100%);
    the control plane names the fault filter after the faults, so every client takes the edit."""
    def aborting(percent: int) -> str:
        return virtual_service(default_route("v1").rstrip("\n")
                               + f"\n  fault: {{abort: {{grpcStatus: UNAVAILABLE, percentage: {{value: {percent}}}}}}}\n")

    vs_file = istio_dir / "catalog-vs.yaml"
    vs_file.write_text(aborting(100))
    cp = start_control_plane(consul_agent.http_addr, env={"MESH_ISTIO_DIR": str(istio_dir)})
    probes = {language: start_probe(language, procs, tmp_path, cp.address, request, f"fault-{language}")
              for language in LANGUAGES}
    for language, proc in probes.items():
        seen = poll_until(lambda: at_least(proc, 50), 60, 0.1, f"50 calls from {language}")
        assert all("UNAVAILABLE" in b or "Unavailable" in b for b in seen), f"{language}: {sorted(set(seen))[:3]}"
    written = write(vs_file, aborting(0))
    for language, proc in probes.items():
        first = poll_until(lambda: next((t for t, b in calls(proc, written) if b == "v1"), None), 10, 0.02,
                           f"{language} following the edit")
        after = poll_until(lambda: at_least(proc, 200, first), 60, 0.1, f"200 calls from {language}")
        assert after == ["v1"] * len(after), f"{language} after the edit: {sorted(set(after))[:3]}"
