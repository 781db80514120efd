"""A real Kubernetes API server on loopback: etcd and kube-apiserver built from their Go modules
(`make kube-tools`: .tools/bin/etcd, kube-apiserver, kubectl, kustomize), started once per session
on free ports, stopped by PID. Token authentication (one admin token), RBAC, a service-account key
pair, self-signed serving certificates in a temporary folder. Istio's CRDs (the `istio.io/api`
module that istioctl is built with) are installed first. There is no controller-manager, scheduler
or kubelet: objects are validated, admitted and stored, and no pod ever runs."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator

import pytest

from support.kubernetes import BIN, START_TIMEOUT, Cluster, istio_crds, missing_tools
from support.ports import free_ports
from support.procs import Processes


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = missing_tools()
    assert not missing, f"missing {missing} in .tools/bin: run `make kube-tools` (make test does)"
    work = tmp_path_factory.mktemp("kubernetes")
    procs = Processes(work / "logs")
    etcd_client, etcd_peer, secure = free_ports(3)
    token = secrets.token_hex(16)
    (work / "tokens.csv").write_text(f"{token},admin,admin,system:masters\n")
    key = work / "sa.key"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(work / "sa.pub")], check=True,
                   capture_output=True, timeout=60)
    started = time.monotonic()
    try:
        procs.start("etcd", [str(BIN / "etcd"), "--data-dir", str(work / "etcd"), "--name", "polymesh-test",
                             "--listen-client-urls", f"http://127.0.0.1:{etcd_client}",
                             "--advertise-client-urls", f"http://127.0.0.1:{etcd_client}",
                             "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                             "--initial-cluster", f"polymesh-test=http://127.0.0.1:{etcd_peer}",
                             "--log-level", "warn"])
        procs.start("kube-apiserver", [
            str(BIN / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            "--bind-address=127.0.0.1", f"--secure-port={secure}", f"--cert-dir={work / 'certs'}",
            f"--token-auth-file={work / 'tokens.csv'}", "--authorization-mode=RBAC",
            f"--service-account-key-file={work / 'sa.pub'}", f"--service-account-signing-key-file={key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16", "--advertise-address=127.0.0.1",
            "--enable-priority-and-fairness=false", "--v=1"])
        kubeconfig = work / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": f"https://127.0.0.1:{secure}",
                                                      "insecure-skip-tls-verify": True}}],
            "users": [{"name": "admin", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}]}))
        made = Cluster(kubeconfig, procs, 0.0)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            ready = made.kubectl("get", "--raw", "/readyz", timeout=10)
            if ready.returncode == 0 and ready.stdout.strip() == "ok":
                break
            for proc in procs.started:
                assert proc.alive(), f"{proc.name} exited:\n{proc.tail()}"
            assert time.monotonic() < deadline, f"the API server was not ready:\n{ready.stderr}\n{procs.report()}"
            time.sleep(0.5)
        made.started_in = round(time.monotonic() - started, 1)
        crds = istio_crds()
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # /readyz says ok a moment before every API group answers on a loaded machine
            installed = made.kubectl("apply", "--server-side", "-f", str(crds), timeout=60)
            if installed.returncode == 0:
                break
            assert time.monotonic() < deadline, f"Istio's CRDs:\n{installed.stderr}\n{procs.report()}"
            time.sleep(1)
        established = made.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s", timeout=90)
        assert established.returncode == 0, f"{established.stderr}\n{procs.report()}"
        yield made
    finally:
        procs.stop_all()
