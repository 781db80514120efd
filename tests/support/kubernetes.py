"""etcd and kube-apiserver for tests/kubernetes: paths, Istio's CRDs, and the Cluster a test talks to."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from support.procs import Processes

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".tools" / "bin"
TOOLS = ("etcd", "kube-apiserver", "kubectl", "kustomize", "istioctl")
START_TIMEOUT = 60.0


def istio_crds() -> Path:
    """Istio's CRDs, from the istio.io/api module in the Go module cache (istioctl's build list)."""
    out = subprocess.run(["go", "list", "-m", "-json", "istio.io/api"], cwd=ROOT / "tools" / "istioctl",
                         capture_output=True, text=True, check=True, timeout=120,
                         env={**os.environ, "GOTOOLCHAIN": "local"})
    return Path(json.loads(out.stdout)["Dir"]) / "kubernetes" / "customresourcedefinitions.gen.yaml"


@dataclass
class Cluster:
    kubeconfig: Path
    procs: Processes
    started_in: float  # seconds from starting etcd to the API server answering /readyz

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args], input=input,
                              capture_output=True, text=True, timeout=timeout)

    def get(self, *args: str) -> dict:
        result = self.kubectl("get", *args, "-o", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def missing_tools() -> list[str]:
    return [name for name in TOOLS if not (BIN / name).exists()]
