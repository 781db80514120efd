"""The manifests of kubernetes/ applied to a real API server (conftest.py): for each overlay
`kustomize build`, `istioctl validate` and `istioctl analyze --use-kube=false` on what it renders,
a server-side dry run, a real server-side apply, and the objects read back. The invalid examples
(tests/kubernetes/invalid/, each with the reason it expects in its first line) are refused with the
API server's reason. Verdicts and timings go to .run/kubernetes/results.json."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from mesh.runner import kube, topology
from support.kubernetes import BIN, ROOT, Cluster

OVERLAYS = ROOT / "kubernetes" / "overlays"
INVALID = Path(__file__).parent / "invalid"
RESULTS = ROOT / ".run" / "kubernetes" / "results.json"
MANAGER = "polymesh"
ISTIO_KINDS = {"VirtualService", "DestinationRule", "PeerAuthentication", "AuthorizationPolicy", "Telemetry"}

pytestmark = pytest.mark.kubernetes
results: dict = {}


def _record(key: str, value) -> None:
    results[key] = value
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


def _build(overlay: str) -> str:
    out = subprocess.run([str(BIN / "kustomize"), "build", str(OVERLAYS / overlay)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _istio_files() -> list[dict]:
    docs = []
    for path in (ROOT / "istio" / name for name in kube.istio_files()):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _deployments() -> dict[str, tuple[topology.Service, str, int]]:
    """name -> (service, version, replicas), from the topology."""
    expected = {}
    for service in topology.SERVICES:
        for instance in service.instances:
            name = f"{service.name}-{instance.version}"
            replicas = expected.get(name, (service, instance.version, 0))[2] + 1
            expected[name] = (service, instance.version, replicas)
    return expected


@pytest.mark.parametrize("overlay", ["sidecar", "proxyless"])
def test_overlay_is_accepted_stored_and_read_back(cluster: Cluster, overlay: str, tmp_path: Path) -> None:
    started = time.monotonic()
    rendered = _build(overlay)
    (tmp_path / "rendered.yaml").write_text(rendered)
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = sorted({d["kind"] for d in docs})
    verdict: dict = {"objects": len(docs), "kinds": kinds}

    # istioctl, offline, on exactly what is applied
    validate = subprocess.run([str(BIN / "istioctl"), "validate", "-f", str(tmp_path / "rendered.yaml")],
                              capture_output=True, text=True, timeout=120)
    assert validate.returncode == 0, validate.stdout + validate.stderr
    analyze = subprocess.run([str(BIN / "istioctl"), "analyze", "--use-kube=false", "-A",
                              str(tmp_path / "rendered.yaml")], capture_output=True, text=True, timeout=120)
    assert analyze.returncode == 0, analyze.stdout + analyze.stderr
    verdict["istioctl_validate"] = "ok"
    verdict["istioctl_analyze"] = (analyze.stdout + analyze.stderr).strip().splitlines()[-1:]

    # A dry run creates nothing, namespaces included: like on a fresh cluster, the namespaces go first
    namespaces = yaml.safe_dump_all([d for d in docs if d["kind"] == "Namespace"])
    for dry_run in (["--dry-run=server"], []):
        made = cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager", MANAGER, *dry_run,
                               "-f", "-", input=namespaces)
        assert made.returncode == 0, made.stderr
    dry = cluster.kubectl("apply", "--server-side", "--field-manager", MANAGER, "--dry-run=server", "-f", "-",
                          input=rendered)
    assert dry.returncode == 0, dry.stderr
    verdict["dry_run_server"] = len(dry.stdout.strip().splitlines())
    applied = cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager", MANAGER, "-f", "-",
                              input=rendered)
    assert applied.returncode == 0, applied.stderr
    verdict["applied"] = len(applied.stdout.strip().splitlines())

    # Deployments: one per service version, labels, replicas, the restricted securityContext, gRPC probes
    stored = {d["metadata"]["name"]: d for d in cluster.get("deployments", "-n", "default")["items"]}
    expected = _deployments()
    assert sorted(stored) == sorted(expected)
    for name, (service, version, replicas) in expected.items():
        deployment = stored[name]
        template = deployment["spec"]["template"]
        assert template["metadata"]["labels"]["app"] == service.name
        assert template["metadata"]["labels"]["version"] == version
        assert deployment["spec"]["replicas"] == replicas
        assert template["spec"]["serviceAccountName"] == service.name
        container = template["spec"]["containers"][0]
        security = container["securityContext"]
        assert security["runAsNonRoot"] and security["runAsUser"] == 10001
        assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
        assert security["capabilities"]["drop"] == ["ALL"]
        assert security["seccompProfile"]["type"] == "RuntimeDefault"
        admin = service.instances[[i.version for i in service.instances].index(version)].admin_port
        assert container["readinessProbe"]["grpc"]["port"] == admin
        assert container["livenessProbe"]["grpc"]["port"] == admin
        assert container["resources"]["limits"] and container["resources"]["requests"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MESH_REGISTER"] == "false" and not any(k.startswith("CONSUL_") for k in env)
        assert container["image"] == f"polymesh/{service.name}:dev"
        annotations = template["metadata"].get("annotations", {})
        if overlay == "proxyless":
            assert annotations["inject.istio.io/templates"] == "grpc-agent"
            assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
            assert env["GRPC_XDS_BOOTSTRAP"] == "/etc/istio/proxy/grpc-bootstrap.json"
        else:
            assert "inject.istio.io/templates" not in annotations
            assert "GRPC_XDS_BOOTSTRAP" not in env and env["MESH_XDS"] == "off"
        # no kubelet, no scheduler, no controller-manager: nothing runs
        assert not deployment.get("status", {}).get("readyReplicas")

    namespace = cluster.get("namespace", "default")
    injection = namespace["metadata"].get("labels", {}).get("istio-injection")
    assert injection == ("enabled" if overlay == "sidecar" else None)

    accounts = {a["metadata"]["name"] for a in cluster.get("serviceaccounts", "-n", "default")["items"]}
    assert {s.name for s in topology.SERVICES} <= accounts
    services = {s["metadata"]["name"]: s for s in cluster.get("services", "-n", "default")["items"]}
    for service in topology.SERVICES:
        port = services[service.name]["spec"]["ports"][0]
        assert port["port"] == service.port and port["appProtocol"] == service.protocol
        assert port["name"].startswith(f"{service.protocol}-")
    claims = {c["metadata"]["name"] for c in cluster.get("pvc", "-n", "default")["items"]}
    assert {"catalog-data", "payments-data", "orders-data", "inventory-data"} <= claims

    # the Istio resources: stored as custom resources, each spec equal to its file's
    for doc in _istio_files():
        kind, meta = doc["kind"], doc["metadata"]
        stored_cr = cluster.get(f"{kind.lower()}.{doc['apiVersion'].split('/')[0]}", meta["name"], "-n",
                                meta["namespace"])
        assert stored_cr["spec"] == doc["spec"], f"{kind} {meta['name']}"
    telemetry = cluster.get("telemetries.telemetry.istio.io", "mesh-default", "-n", "istio-system")
    assert telemetry["spec"]["tracing"][0]["providers"] == [{"name": "jaeger"}]
    assert cluster.get("deployment", "jaeger", "-n", "observability")["spec"]["replicas"] == 1
    verdict["istio_resources_stored"] = len(_istio_files()) + 1
    verdict["seconds"] = round(time.monotonic() - started, 1)
    verdict["api_server_started_in_s"] = cluster.started_in
    _record(f"overlay_{overlay}", verdict)


@pytest.mark.parametrize("example", sorted(p.name for p in INVALID.glob("*.yaml")))
def test_invalid_example_is_refused_with_the_reason(cluster: Cluster, example: str) -> None:
    text = (INVALID / example).read_text()
    expected = text.splitlines()[0].removeprefix("# expect:").strip()
    for dry in (["--dry-run=server"], []):
        refused = cluster.kubectl("apply", "--server-side", "--field-manager", "invalid", *dry, "-f", "-", input=text)
        assert refused.returncode != 0, f"{example} was accepted: {refused.stdout}"
        assert expected in refused.stderr, refused.stderr
    kind = yaml.safe_load(text.split("\n", 1)[1])["kind"]
    reason = next(line for line in refused.stderr.splitlines() if expected in line)
    _record(f"invalid_{example}", {"kind": kind, "refused": reason.strip()[-300:]})
