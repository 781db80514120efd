"""The mesh as Kubernetes runs it: the kustomize base in `kubernetes/base/` (and `istio/Kustomization`,
which lists the Istio resources of `istio/*.yaml` so that the overlays take those very files) is generated from
the topology (`mesh.runner.topology`: the same services, versions, ports and environment as `make up` and
docker-compose.yml), never edited by hand. `python -m mesh.runner kube --write` writes it; `--check` (and
tests/unit/test_kube_manifests.py) fails when it has drifted from the topology. The overlays
(`kubernetes/overlays/sidecar`, `.../proxyless`) are hand-written and reference the base.

What the base holds:
- Namespaces: `default` (the topology's namespace: the Istio files and the SPIFFE identities
  spiffe://cluster.local/ns/default/sa/SERVICE name it), `istio-system` (the root namespace of the mesh-wide
  PeerAuthentication) and `observability` (Jaeger).
- Per service: a ServiceAccount named after the service (its SPIFFE identity), a Deployment per version
  (labels `app`, `version`; the instances of one version are its replicas), a Service (`grpc-` port name and
  `appProtocol: grpc`; the gateway `http`), and a PersistentVolumeClaim for its SQLite store where it has one.
- Every pod: non-root uid 10001 (the images' user), read-only root filesystem (emptyDir for /tmp), no privilege
  escalation, every capability dropped, seccomp RuntimeDefault; native gRPC liveness and readiness probes on the
  admin port; requests and limits.
- In-cluster Kubernetes is the registry: MESH_REGISTER=false (no Consul), each pod listens on the service port
  on all its addresses, its instance id is the pod's name.
- Jaeger (`observability/jaeger`) and a Telemetry resource sending the sidecars' spans to it.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

import yaml

from mesh.runner import compose, topology

__all__ = ["BASE_DIR", "ISTIO_KUSTOMIZATION", "render"]

ISTIO_DIR = topology.ROOT / "istio"
BASE_DIR = topology.ROOT / "kubernetes" / "base"
ISTIO_KUSTOMIZATION = ISTIO_DIR / "Kustomization"  # no .yaml: the local control plane reads istio/*.yaml
NAMESPACE = topology.NAMESPACE
OBSERVABILITY = "observability"
RUN_DIR = pathlib.PurePosixPath("/var/lib/polymesh")  # the images' working folder, owned by uid 10001
MESH_UID = 10001
PART_OF = "polymesh"
JAEGER_IMAGE = "jaegertracing/jaeger:2.13.0"
# The services that keep a SQLite file in MESH_DATA_DIR (services/*/: catalog.db, payments.db, orders.db,
# inventory.db); every version and replica of one service shares its file, as with `make up`.
STORES = {"catalog": "1Gi", "payments": "1Gi", "orders": "1Gi", "inventory": "1Gi"}
RESOURCES = {
    "python": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
    "typescript": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
    "go": {"requests": {"cpu": "25m", "memory": "32Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}},
}
HEADER = ("# Generated from mesh/runner/topology.py by `python -m mesh.runner kube --write`: do not edit.\n"
          "# README \"Deploy to Kubernetes with Istio\".\n")


def placement() -> topology.Placement:
    p = topology.Ports(0)
    return topology.Placement(pathlib.Path(RUN_DIR), 0, "", "", f"http://jaeger.{OBSERVABILITY}.svc.cluster.local:{p.otlp_grpc}",
                              pathlib.Path("/istio"), lambda _: "0.0.0.0")


def _versions(service: topology.Service) -> dict[str, list[topology.Instance]]:
    by_version: dict[str, list[topology.Instance]] = {}
    for instance in service.instances:
        by_version.setdefault(instance.version, []).append(instance)
    return by_version


def _env(service: topology.Service, instance: topology.Instance) -> list[dict[str, Any]]:
    env = topology.instance_env(service, instance, placement())
    for name in list(env):
        # Kubernetes is the registry; the xDS bootstrap is the proxyless overlay's (Istio's grpc-agent)
        if name.startswith("CONSUL_") or name in ("GRPC_XDS_BOOTSTRAP", "MESH_INSTANCE_ID"):
            del env[name]
    env["MESH_PORT"] = str(service.port)  # a pod has its own address: every version listens on the service port
    env["MESH_REGISTER"] = "false"
    return [{"name": "MESH_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            *({"name": k, "value": v} for k, v in sorted(env.items()))]


def _security_context() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "runAsUser": MESH_UID, "runAsGroup": MESH_UID, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def _deployment(service: topology.Service, version: str, instances: list[topology.Instance]) -> dict[str, Any]:
    first = instances[0]
    labels = {"app": service.name, "version": version}
    port_name = "http" if service.protocol == "http" else "grpc"
    probe = {"grpc": {"port": first.admin_port}, "periodSeconds": 5, "timeoutSeconds": 2}
    volumes = [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if service.name in STORES:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": f"{service.name}-data"}})
    else:
        volumes.append({"name": "data", "emptyDir": {}})
    mounts.append({"name": "data", "mountPath": str(RUN_DIR / "data")})
    if service.name == "gateway":  # the token issuer's public keys (mesh/auth/tokens.py), given by the operator
        volumes.append({"name": "auth", "configMap": {"name": "gateway-jwks", "optional": True}})
        mounts.append({"name": "auth", "mountPath": str(RUN_DIR / "auth"), "readOnly": True})
    container = {
        "name": service.name, "image": compose.IMAGES[service.name], "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": port_name, "containerPort": service.port, "protocol": "TCP"},
                  {"name": "admin", "containerPort": first.admin_port, "protocol": "TCP"}],
        "env": _env(service, first),
        "resources": RESOURCES[service.language],
        "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 3},
        "readinessProbe": {**probe, "failureThreshold": 2},
        "securityContext": _security_context(),
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"{service.name}-{version}", "namespace": NAMESPACE,
                     "labels": {**labels, "app.kubernetes.io/part-of": PART_OF}},
        "spec": {
            "replicas": len(instances),
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, "app.kubernetes.io/part-of": PART_OF}},
                "spec": {
                    "serviceAccountName": service.name,
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 15,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": MESH_UID, "runAsGroup": MESH_UID,
                                        "fsGroup": MESH_UID, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def _service_docs(service: topology.Service) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "ServiceAccount",
                         "metadata": {"name": service.name, "namespace": NAMESPACE,
                                      "labels": {"app": service.name, "app.kubernetes.io/part-of": PART_OF}}}]
    if service.name in STORES:
        docs.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                     "metadata": {"name": f"{service.name}-data", "namespace": NAMESPACE,
                                  "labels": {"app": service.name, "app.kubernetes.io/part-of": PART_OF}},
                     "spec": {"accessModes": ["ReadWriteOnce"],
                              "resources": {"requests": {"storage": STORES[service.name]}}}})
    for version, instances in _versions(service).items():
        docs.append(_deployment(service, version, instances))
    protocol = service.protocol
    docs.append({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": service.name, "namespace": NAMESPACE,
                              "labels": {"app": service.name, "app.kubernetes.io/part-of": PART_OF}},
                 "spec": {"selector": {"app": service.name},
                          "ports": [{"name": f"{protocol}-{service.name}", "port": service.port,
                                     "targetPort": "http" if protocol == "http" else "grpc",
                                     "appProtocol": protocol, "protocol": "TCP"}]}})
    return docs


def _namespaces() -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            for name in (NAMESPACE, "istio-system", OBSERVABILITY)]


def _jaeger() -> list[dict[str, Any]]:
    p = topology.BASE_PORTS
    labels = {"app": "jaeger", "version": JAEGER_IMAGE.rsplit(":", 1)[1], "app.kubernetes.io/part-of": f"{PART_OF}-observability"}
    ports = [("grpc-otlp", p["otlp_grpc"], "grpc"), ("http-otlp", p["otlp_http"], "http"),
             ("http-query", p["jaeger_query"], "http")]
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "jaeger", "namespace": OBSERVABILITY, "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "jaeger"}},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "automountServiceAccountToken": False,
                      "securityContext": {"runAsNonRoot": True, "runAsUser": MESH_UID, "runAsGroup": MESH_UID,
                                          "seccompProfile": {"type": "RuntimeDefault"}},
                      "containers": [{
                          "name": "jaeger", "image": JAEGER_IMAGE, "imagePullPolicy": "IfNotPresent",
                          # Jaeger v2's built-in configuration listens on localhost unless told otherwise
                          "env": [{"name": "JAEGER_LISTEN_HOST", "value": "0.0.0.0"}],
                          "ports": [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port, _ in ports],
                          "readinessProbe": {"httpGet": {"path": "/", "port": p["jaeger_health"]}, "periodSeconds": 5},
                          "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                                        "limits": {"cpu": "1", "memory": "512Mi"}},
                          "securityContext": _security_context(),
                          "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
                      "volumes": [{"name": "tmp", "emptyDir": {}}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "jaeger", "namespace": OBSERVABILITY, "labels": labels},
         "spec": {"selector": {"app": "jaeger"},
                  "ports": [{"name": name, "port": port, "targetPort": name, "appProtocol": proto, "protocol": "TCP"}
                            for name, port, proto in ports]}},
    ]


def _telemetry() -> dict[str, Any]:
    # The provider `jaeger` is an extension provider of the mesh config (README "Deploy to Kubernetes with
    # Istio": opentelemetry, service jaeger.observability.svc.cluster.local, port 4317).
    return {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
            "metadata": {"name": "mesh-default", "namespace": "istio-system"},
            "spec": {"tracing": [{"providers": [{"name": "jaeger"}], "randomSamplingPercentage": 100.0}]}}


def _dump(docs: list[dict[str, Any]]) -> str:
    return HEADER + yaml.dump_all(docs, Dumper=compose._Dumper, sort_keys=False, width=120)


def istio_files() -> list[str]:
    """The Istio resources the local control plane reads: every istio/*.yaml but the scenario files that
    `make scenario` copies in while a scenario is on (istio/scenarios/NAME/, git-ignored)."""
    scenario = {p.name for p in ISTIO_DIR.glob("scenarios/*/*.yaml")}
    return sorted(p.name for p in ISTIO_DIR.glob("*.yaml") if p.name not in scenario)


def render() -> dict[pathlib.Path, str]:
    """Every generated file, by path."""
    files: dict[pathlib.Path, str] = {
        BASE_DIR / "namespaces.yaml": _dump(_namespaces()),
        BASE_DIR / "jaeger.yaml": _dump(_jaeger()),
        BASE_DIR / "telemetry.yaml": _dump([_telemetry()]),
    }
    for service in topology.SERVICES:
        files[BASE_DIR / f"{service.name}.yaml"] = _dump(_service_docs(service))
    resources = [p.name for p in files]
    files[BASE_DIR / "kustomization.yaml"] = HEADER + yaml.dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
         # the Istio resources: the very files of istio/, through istio/Kustomization
         "resources": [*resources, "../../istio"]}, Dumper=compose._Dumper, sort_keys=False, width=120)
    files[ISTIO_KUSTOMIZATION] = HEADER.replace("README", "The files the local control plane reads; README") + yaml.dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": istio_files()},
        Dumper=compose._Dumper, sort_keys=False, width=120)
    return files


def stale() -> list[pathlib.Path]:
    return [path for path, text in render().items() if not path.exists() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.runner kube", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    files = render()
    if args.write:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(topology.ROOT)}")
        return 0
    if args.check:
        drift = stale()
        for path in drift:
            print(f"{path.relative_to(topology.ROOT)} differs from the topology: "
                  "run `python -m mesh.runner kube --write`", file=sys.stderr)
        return 1 if drift else 0
    for path, text in files.items():
        print(f"# --- {path.relative_to(topology.ROOT)}\n{text}")
    return 0
