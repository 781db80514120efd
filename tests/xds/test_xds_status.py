"""What the control plane shows about itself and its clients: CSDS with real grpcio, grpc-go and
grpc-js clients, a NACK from a real client, and a translation failure from a real Consul input
(visible in the log, in health and in CSDS, while the last good endpoints keep serving)."""

from __future__ import annotations

import asyncio
import json
import sys

import grpc
import pytest
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.status.v3 import csds_pb2
from google.protobuf import json_format

from polymesh.controlplane.v1 import status_pb2, status_pb2_grpc
from support.ads import EDS, AdsClient
from support.backends import start_catalog_backend
from support.poll import poll_until
from support.ports import free_port
from support.xds import write_bootstrap

pytestmark = pytest.mark.integration

SERVICE_PORT = 7000
TARGET = f"catalog:{SERVICE_PORT}"
CATALOG_EDS = f"outbound|{SERVICE_PORT}||catalog.default.svc.cluster.local"
TRANSLATION_HEALTH = "mesh.xds.translation"


def calls(proc, since: float = 0.0) -> list[str]:
    out = []
    for line in proc.log_lines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry["t"] >= since:
                out.append(entry.get("backend") or f"error: {entry['error']}")
    return out


def configs_of(response: csds_pb2.ClientStatusResponse, instance: str) -> dict[tuple[str, str], object]:
    """(short type, name) -> GenericXdsConfig of the node of `instance`; {} if it is not connected."""
    for config in response.config:
        if config.node.id.split("~")[2] == f"{instance}.default":
            return {(c.type_url.rsplit(".", 1)[-1], c.name): c for c in config.generic_xds_configs}
    return {}


def all_acked(configs: dict) -> bool:
    return bool(configs) and all(c.client_status == dump_pb2.ACKED and c.config_status == csds_pb2.SYNCED
                                 for c in configs.values())


def render(response: csds_pb2.ClientStatusResponse) -> str:
    """A proxy-status-like table of a CSDS answer (printed for the record: pytest -s)."""
    lines = [f"{'NODE':<62} {'TYPE':<22} {'NAME':<52} {'VERSION':<8} {'CLIENT':<9} CONFIG  DETAILS"]
    for config in response.config:
        for c in config.generic_xds_configs:
            lines.append(f"{config.node.id:<62} {c.type_url.rsplit('.', 1)[-1]:<22} {c.name:<52} {c.version_info:<8} "
                         f"{dump_pb2.ClientResourceStatus.Name(c.client_status):<9} "
                         f"{csds_pb2.ConfigStatus.Name(c.config_status):<7} {c.error_state.details}")
    return "\n".join(lines)


def test_csds_reports_each_real_client_with_its_subscriptions_acked(
    consul_agent, control_plane, procs, tmp_path, python_probe, go_probe, node_probe
):
    server, port = start_catalog_backend("a")
    try:
        consul_agent.register("catalog", "catalog-a", port)
        commands = {
            "python": [sys.executable, str(python_probe), "--target", f"xds:///{TARGET}", "--interval-ms", "50"],
            "go": [str(go_probe), "-target", f"xds:///{TARGET}", "-interval", "50ms"],
            "node": ["node", str(node_probe), "--target", f"xds:///{TARGET}", "--interval-ms", "50"],
        }
        probes = {}
        for language, command in commands.items():
            bootstrap = write_bootstrap(tmp_path / f"{language}.json", control_plane.address,
                                        instance_id=f"probe-{language}", service="orders", version="v3")
            probes[language] = procs.start(f"probe-{language}", command, env={"GRPC_XDS_BOOTSTRAP": str(bootstrap)})
        for language, proc in probes.items():
            poll_until(lambda: "a" in calls(proc), 30, 0.05, f"the {language} probe to reach a")
        response = poll_until(lambda: (r := control_plane.client_status()) and all(
            all_acked(configs_of(r, f"probe-{language}")) for language in probes) and r, 10, 0.05,
            "every probe's resources ACKED")
        print("\n" + render(response))
        expected = {("Listener", TARGET), ("RouteConfiguration", CATALOG_EDS), ("Cluster", CATALOG_EDS),
                    ("ClusterLoadAssignment", CATALOG_EDS)}
        for language in probes:
            configs = configs_of(response, f"probe-{language}")
            assert set(configs) == expected, language
            assert all(c.version_info for c in configs.values())
        [node] = [c.node for c in response.config if "probe-go" in c.node.id]
        metadata = json_format.MessageToDict(node.metadata)
        assert (metadata["GENERATOR"], metadata["LABELS"]) == ("grpc", {"app": "orders", "version": "v3"})

        # an endpoint change: every client ACKs the new version of the endpoints, and only those
        eds_before = {lang: configs_of(response, f"probe-{lang}")[("ClusterLoadAssignment", CATALOG_EDS)].version_info
                      for lang in probes}
        listener_before = configs_of(response, "probe-python")[("Listener", TARGET)].version_info
        consul_agent.register("catalog", "catalog-b", free_port())

        def moved_on():
            r = control_plane.client_status()
            return all(all_acked(configs_of(r, f"probe-{lang}")) and int(configs_of(r, f"probe-{lang}")[
                ("ClusterLoadAssignment", CATALOG_EDS)].version_info) > int(eds_before[lang]) for lang in probes) and r

        after = poll_until(moved_on, 10, 0.05, "every probe to ACK the new endpoints")
        assert configs_of(after, "probe-python")[("Listener", TARGET)].version_info == listener_before
        # resource contents on request
        with_contents = control_plane.client_status(with_contents=True)
        listener = listener_pb2.Listener()
        assert configs_of(with_contents, "probe-go")[("Listener", TARGET)].xds_config.Unpack(listener)
        assert listener.name == TARGET
    finally:
        server.stop(0)


def test_a_nack_shows_in_csds_with_its_reason_until_a_good_version_is_acked(consul_agent, control_plane):
    """The stock clients NACK nothing this control plane sends (and none could be made to, with an
    honest input), so the NACK comes from an ADS stream of tests/support/ads.py, as a client
    that rejects a resource would send it."""
    async def scenario():
        async with AdsClient(control_plane.address, "nacker", "orders") as ads:
            consul_agent.register("catalog", "catalog-1", 7001)
            first = await ads.request(EDS, [CATALOG_EDS])
            await ads.nack(first, "endpoint 127.0.0.1:7001: rejected by policy")
            configs = poll_until(lambda: (c := configs_of(control_plane.client_status(), "nacker")) and
                                 c[("ClusterLoadAssignment", CATALOG_EDS)].client_status == dump_pb2.NACKED and c,
                                 5, 0.05, "the NACK in CSDS")
            config = configs[("ClusterLoadAssignment", CATALOG_EDS)]
            assert config.config_status == csds_pb2.ERROR and config.version_info == ""  # nothing ACKed yet
            assert config.error_state.version_info == first.version_info
            assert config.error_state.details == "endpoint 127.0.0.1:7001: rejected by policy"
            consul_agent.register("catalog", "catalog-2", 7002)
            await ads.until(EDS, lambda r: len(r[CATALOG_EDS].endpoints[0].lb_endpoints) == 2)
            configs = poll_until(lambda: all_acked(c := configs_of(control_plane.client_status(), "nacker")) and c,
                                 5, 0.05, "ACKED again")
            assert not configs[("ClusterLoadAssignment", CATALOG_EDS)].error_state.details

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_translation_failure_keeps_the_last_endpoints_serving_and_is_visible(
    consul_agent, control_plane, procs, tmp_path, python_probe
):
    server, port = start_catalog_backend("a")
    try:
        consul_agent.register("catalog", "catalog-a", port)
        bootstrap = write_bootstrap(tmp_path / "probe.json", control_plane.address, instance_id="probe-t",
                                    service="orders")
        probe = procs.start("probe", [sys.executable, str(python_probe), "--target", f"xds:///{TARGET}",
                                      "--interval-ms", "20"], env={"GRPC_XDS_BOOTSTRAP": str(bootstrap)})
        poll_until(lambda: "a" in calls(probe), 30, 0.05, "the probe to reach a")
        assert control_plane.health(TRANSLATION_HEALTH) == "SERVING"

        # gRPC needs IP literals in EDS: an instance advertising a host name cannot be translated
        consul_agent.register("catalog", "catalog-bad", port, address="catalog.invalid")
        failures = poll_until(lambda: [e for e in control_plane.logs() if "translation of" in e["message"]
                                       and e["severity"] == "ERROR"], 10, 0.05, "the failure to be logged")
        print(f"\nlog: {json.dumps(failures[0])}")
        assert "catalog.default.svc.cluster.local" in failures[0]["message"]
        assert "'catalog-bad': address 'catalog.invalid' is not an IP" in failures[0]["message"]
        assert poll_until(lambda: control_plane.health(TRANSLATION_HEALTH) == "NOT_SERVING", 5, 0.05,
                          "translation health NOT_SERVING")
        assert control_plane.health() == "SERVING"  # every other service is still served
        eds = configs_of(control_plane.client_status(), "probe-t")[("ClusterLoadAssignment", CATALOG_EDS)]
        print(f"CSDS: {eds.name} {csds_pb2.ConfigStatus.Name(eds.config_status)}: {eds.error_state.details}")
        assert eds.config_status == csds_pb2.STALE and "catalog.invalid" in eds.error_state.details
        assert eds.client_status == dump_pb2.ACKED  # the client runs the last good version
        seen_from = len(calls(probe))
        poll_until(lambda: len(calls(probe)) >= seen_from + 20, 10, 0.05, "20 more calls")
        assert set(calls(probe)[seen_from:]) == {"a"}, "the last good endpoints stopped serving"

        consul_agent.deregister("catalog-bad")
        assert poll_until(lambda: control_plane.health(TRANSLATION_HEALTH) == "SERVING", 10, 0.05,
                          "translation health SERVING again")
        assert any("works again" in e["message"] for e in control_plane.logs())
        eds = configs_of(control_plane.client_status(), "probe-t")[("ClusterLoadAssignment", CATALOG_EDS)]
        assert eds.config_status == csds_pb2.SYNCED and not eds.error_state.details
    finally:
        server.stop(0)


def test_the_status_service_names_rejected_resources_and_ignored_fields(consul_agent, start_control_plane, tmp_path):
    """What `make status` prints: each rejected resource with its file and reason, each ignored
    field; a fix clears the rejection."""
    consul_agent.register("catalog", "catalog-1", free_port(), meta={"version": "v1"})
    istio = tmp_path / "istio"
    istio.mkdir()
    rule = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: catalog}\nspec:\n" \
           "  host: catalog\n  subsets: [{name: v1, labels: {version: v1}}]\n"
    route = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: catalog}\nspec:\n" \
            "  hosts: [catalog]\n  http: [{route: [{destination: {host: catalog, subset: SUBSET}}], " \
            "mirror: {host: catalog}}]\n"
    (istio / "rule.yaml").write_text(rule)
    (istio / "route.yaml").write_text(route.replace("SUBSET", "v7"))
    cp = start_control_plane(consul_agent.http_addr, env={"MESH_ISTIO_DIR": str(istio)})

    def status() -> status_pb2.GetStatusResponse:
        with grpc.insecure_channel(cp.address) as channel:
            return status_pb2_grpc.StatusServiceStub(channel).GetStatus(status_pb2.GetStatusRequest(), timeout=5)

    reply = poll_until(lambda: status() if status().rejected else None, 10, 0.1, "the rejection reported")
    assert reply.istio_dir == str(istio)
    assert [(p.file, p.resource, p.reason) for p in reply.rejected] == [
        (str(istio / "route.yaml"), "VirtualService default/catalog",
         "spec.http[0].route[0].destination.subset 'v7': no DestinationRule of catalog.default.svc.cluster.local "
         "defines it")]
    assert cp.health("mesh.xds.policy") == "NOT_SERVING"
    (istio / "route.yaml").write_text(route.replace("SUBSET", "v1"))
    reply = poll_until(lambda: status() if not status().rejected else None, 10, 0.1, "the rejection cleared")
    assert [(p.file, p.field, p.reason) for p in reply.warnings] == [
        (str(istio / "route.yaml"), "spec.http[0].mirror", "proxyless gRPC cannot honour it")]
    assert (list(reply.translation_failures), list(reply.failing_tasks)) == ([], [])
    assert cp.health("mesh.xds.policy") == "SERVING"
