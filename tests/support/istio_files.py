"""Istio resources a test writes into the test mesh's own folder (`mesh.istio_dir`, hot-reloaded by
the control plane), and puts back as they were when it is done.

    files = IstioFiles(mesh)
    files.write("pricing.yaml", destination_rule("pricing", {"flaky": {"version": "flaky"}}))
    files.write("traffic-test.yaml", virtual_service("pricing", {"name": "split-" + tag(), "route": [...]}))
    files.restore()          # the files it replaced come back, the files it added go

Every route a test writes gets a name unique to that edit (`http[].name` becomes the xDS route's
name), so `support.csds.wait_route_names` tells when the client under test has taken it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.runner import topology

__all__ = ["IstioFiles", "destination", "destination_rule", "host", "tag", "virtual_service"]

POLICY_HEALTH = "mesh.xds.policy"  # NOT_SERVING while the control plane rejects some resource


def host(service: str) -> str:
    return f"{service}.{topology.NAMESPACE}.svc.cluster.local"


def tag() -> str:
    return uuid.uuid4().hex[:8]


def destination(service: str, subset: str = "", weight: int | None = None) -> dict:
    out: dict = {"destination": {"host": host(service), **({"subset": subset} if subset else {})}}
    if weight is not None:
        out["weight"] = weight
    return out


def virtual_service(service: str, *http: dict) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": f"traffic-test-{service}", "namespace": topology.NAMESPACE},
            "spec": {"hosts": [host(service)], "http": list(http)}}


def destination_rule(service: str, extra_subsets: Mapping[str, Mapping] | None = None,
                     traffic_policy: Mapping | None = None) -> dict:
    """The service's rule as istio/ has it (subsets v1 and v2, mTLS: ISTIO_MUTUAL, named like the file
    istio/SERVICE.yaml names it), plus `extra_subsets` (name -> {"labels": ..., "trafficPolicy": ...})
    and more of a policy."""
    subsets = [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")]
    subsets += [{"name": name, **dict(subset)} for name, subset in (extra_subsets or {}).items()]
    spec: dict = {"host": host(service), "subsets": subsets,
                  "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}, **dict(traffic_policy or {})}}
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": service, "namespace": topology.NAMESPACE}, "spec": spec}


class IstioFiles:
    def __init__(self, mesh) -> None:
        self.folder = Path(mesh.istio_dir)
        self.control_plane = f"127.0.0.1:{topology.Ports(mesh.offset).xds}"
        self.log_path = Path(mesh.run_dir) / "logs" / "control-plane.log"
        self.istiod = topology.control_plane_from_env() == "istiod"
        self._originals: dict[str, str | None] = {}

    def write(self, name: str, *documents: dict) -> Path:
        """Write `documents` to `name` in one step (the control plane never sees half a file)."""
        path = self.folder / name
        if name not in self._originals:
            self._originals[name] = path.read_text() if path.exists() else None
        self._replace(path, yaml.safe_dump_all(documents, sort_keys=False))
        return path

    def restore(self) -> None:
        for name, text in self._originals.items():
            path = self.folder / name
            if text is None:
                path.unlink(missing_ok=True)
            else:
                self._replace(path, text)
        self._originals.clear()

    @staticmethod
    def _replace(path: Path, text: str) -> None:
        temp = path.with_name(path.name + ".tmp")  # not *.yaml: the control plane does not read it
        temp.write_text(text)
        os.replace(temp, path)

    # -- what the control plane says -------------------------------------------------------------------
    def policy_health(self) -> str:
        """Ours: the health of `mesh.xds.policy` (NOT_SERVING while any resource is rejected). istiod
        has no such health: "n/a"."""
        if self.istiod:
            return "n/a"
        with grpc.insecure_channel(self.control_plane) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=POLICY_HEALTH),
                                                              timeout=2)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    def log_entries(self, since: int = 0) -> list[dict]:
        """The control plane's JSON log lines from line `since` on (see `log_mark`), each with
        `message` and `severity` (istiod's `msg` and `level` are read as those)."""
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines()[since:]:
            if line.startswith("{"):
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if "msg" in entry:
                    entry = {**entry, "message": entry["msg"], "severity": str(entry.get("level", "")).upper()}
                entries.append(entry)
        return entries

    def log_mark(self) -> int:
        """Where the control plane's log ends now: `rejections(file, since=mark)` reads what follows."""
        return len(self.log_path.read_text(errors="replace").splitlines())

    def rejections(self, file: str, since: int = 0) -> list[str]:
        """The control plane's rejection messages naming `file` (a name in the folder). Ours logs
        `rejected ...` with the file and the resource; istiod `Failed to parse PATH: reason`, and
        then keeps its whole previous configuration (its file store reloads the folder as one)."""
        if self.istiod:
            return [e["message"] for e in self.log_entries(since)
                    if e["message"].startswith("Failed to parse ") and f"/{file}:" in e["message"]]
        return [e["message"] for e in self.log_entries(since)
                if "rejected" in e.get("message", "") and e.get("file", "").endswith("/" + file)]

    def complaints(self) -> str:
        """The control plane's recent rejections and warnings, for a failure message."""
        lines = [e["message"] for e in self.log_entries() if e.get("severity") in ("WARN", "ERROR")][-5:]
        return "control plane says: " + (" | ".join(lines) if lines else "nothing (no WARN or ERROR)")
