"""What mTLS costs a call: p50/p99 of unary calls to a server of each language, plaintext against
mTLS, measured in one run. `make bench-mtls` (about a minute).

    .venv/bin/python -m benchmarks.mtls                      # 10 rounds x 300 calls per server
    .venv/bin/python -m benchmarks.mtls --rounds 4 --calls 200

What runs, all on 127.0.0.1: a real Consul, the real control plane (its mesh CA issuing every
instance's certificate), and per language two conformance probes (tests/conformance/probes: the
runtime libraries' servers): `plain-LANG`, whose workload PeerAuthentication is DISABLE, and
`mtls-LANG`, under the mesh-wide STRICT one, which the client reaches through a DestinationRule
with `ISTIO_MUTUAL` (so the client checks the server's SPIFFE id and shows its own certificate).
The client is grpcio in this process, an xDS client with its own bootstrap and certificate (the
same client for every server, so the differences are the servers' and TLS's), calling
`xds:///SERVICE:50051` Echo one call after another on one connection per service. Tracing is off
(`OTEL_TRACES_EXPORTER=none`) in the probes.

Noise: these machines are shared, so the rounds interleave: each round calls every server in
both modes, in a shuffled order, and the summary takes every round's samples together. Reported
per server language: p50 and p99 of each mode (ms), the difference and the ratio mTLS/plaintext,
and the cost of a new connection (first call on a fresh channel, median of `--handshakes`).
Results: a table on stdout and `benchmarks/results/mtls.json`. Every process it starts it stops
by PID.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import importlib.util  # noqa: E402

import grpc  # noqa: E402
import grpc.experimental  # noqa: E402  (insecure_channel_credentials)


def _conformance_world():
    """tests/conformance/conftest.py (the probes and how they start), under a name of its own."""
    spec = importlib.util.spec_from_file_location("conformance_world", ROOT / "tests" / "conformance" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_world = _conformance_world()
LANGUAGES, SERVICE_PORT, Mesh = _world.LANGUAGES, _world.SERVICE_PORT, _world.Mesh
from benchmarks.stats import summary  # noqa: E402
from mesh.xds import bootstrap  # noqa: E402
from polymesh.conformance.v1 import conformance_pb2, conformance_pb2_grpc  # noqa: E402
from support.consul import ConsulAgent  # noqa: E402
from support.poll import poll_until  # noqa: E402
from support.procs import Processes  # noqa: E402
from support.xds import start_control_plane  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "mtls.json"
MODES = ("plaintext", "mtls")


def policy(languages: tuple[str, ...]) -> str:
    docs = ["apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
            "metadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n"]
    for language in languages:
        docs.append("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
                    f"metadata: {{name: plain-{language}, namespace: default}}\n"
                    f"spec: {{selector: {{matchLabels: {{app: plain-{language}}}}}, mtls: {{mode: DISABLE}}}}\n")
        docs.append("apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
                    f"metadata: {{name: mtls-{language}, namespace: default}}\n"
                    f"spec: {{host: mtls-{language}.default.svc.cluster.local, "
                    "trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}}\n")
    return "---\n".join(docs)


def channel(service: str, own_connections: bool = False) -> grpc.Channel:
    """`own_connections`: not from grpcio's process-wide subchannel pool (a new connection)."""
    return grpc.secure_channel(f"xds:///{service}:{SERVICE_PORT}",
                               grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials()),
                               options=[("grpc.use_local_subchannel_pool", 1)] if own_connections else [])


def timed_calls(stub, count: int) -> list[float]:
    request = conformance_pb2.EchoRequest(message="bench")
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        stub.Echo(request, timeout=5)
        samples.append(time.perf_counter() - started)
    return samples


def first_call(service: str) -> float:
    """A fresh channel's first call: xDS resolution, TCP and (for mTLS) the TLS handshake."""
    started = time.perf_counter()
    with channel(service, own_connections=True) as fresh:
        conformance_pb2_grpc.ConformanceServiceStub(fresh).Echo(conformance_pb2.EchoRequest(message="new"),
                                                               timeout=10, wait_for_ready=True)
        return time.perf_counter() - started


def run(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-mtls-"))
    procs = Processes(work / "logs")
    consul = ConsulAgent(work / "consul")
    try:
        consul.start()
        istio = work / "istio"
        istio.mkdir()
        (istio / "bench.yaml").write_text(policy(args.languages))
        cp = start_control_plane(procs, consul.http_addr, env={
            "MESH_ISTIO_DIR": str(istio), "MESH_CA_DIR": str(work / "ca"), "MESH_CERTS_DIR": str(work / "certs")})
        world = Mesh(procs, work, consul, cp, types.SimpleNamespace(endpoint="http://127.0.0.1:9"))
        quiet = {"OTEL_TRACES_EXPORTER": "none", "MESH_LOG_LEVEL": "warn"}
        services = {}
        for language in args.languages:
            for mode in MODES:
                name = f"{'plain' if mode == 'plaintext' else 'mtls'}-{language}"
                world.start_probe(language, service=name, xds_address=cp.address, extra_env=quiet)
                services[(language, mode)] = name
        node = bootstrap.Node("bench", "bench-1", "v1")
        path = work / "xds" / "bench-1.json"
        bootstrap.write(path, bootstrap.bootstrap(node, cp.address, work / "certs" / "bench-1"))
        os.environ["GRPC_XDS_BOOTSTRAP"] = str(path)
        channels = {key: channel(name) for key, name in services.items()}
        stubs = {key: conformance_pb2_grpc.ConformanceServiceStub(ch) for key, ch in channels.items()}

        def answered(key) -> bool:
            try:
                stubs[key].Echo(conformance_pb2.EchoRequest(message="up"), timeout=2)
            except grpc.RpcError:
                return False
            return True

        for key in stubs:  # the policy is served (mTLS servers refuse plaintext) and every call works
            poll_until(lambda: answered(key), 30, 0.2, f"{services[key]} answering")
            timed_calls(stubs[key], args.warmup)
        samples: dict[tuple[str, str], list[float]] = {key: [] for key in stubs}
        for _ in range(args.rounds):
            order = list(stubs)
            random.shuffle(order)
            for key in order:
                samples[key] += timed_calls(stubs[key], args.calls)
        handshakes = {key: [] for key in stubs}
        for _ in range(args.handshakes):
            for key in stubs:
                handshakes[key].append(first_call(services[key]))
        for ch in channels.values():
            ch.close()
    finally:
        procs.stop_all()
        consul.stop()
    out = {"measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "grpcio": grpc.__version__},
           "method": {"rounds": args.rounds, "calls_per_round": args.calls, "warmup": args.warmup,
                      "handshakes": args.handshakes, "client": "grpcio xDS client in the benchmark process"},
           "servers": {}}
    for language in args.languages:
        plain, mutual = (summary(samples[(language, mode)]) for mode in MODES)
        new_plain, new_mutual = (summary(handshakes[(language, mode)]) for mode in MODES)
        out["servers"][language] = {
            "plaintext": plain, "mtls": mutual,
            "p50_added_ms": (mutual["p50"] - plain["p50"]) * 1e3, "p99_added_ms": (mutual["p99"] - plain["p99"]) * 1e3,
            "p50_ratio": mutual["p50"] / plain["p50"], "p99_ratio": mutual["p99"] / plain["p99"],
            "new_connection": {"plaintext": new_plain, "mtls": new_mutual},
            "samples_ms": {mode: [round(s * 1e3, 4) for s in samples[(language, mode)]] for mode in MODES}}
    return out


def table(results: dict) -> str:
    lines = ["server      | plaintext p50 / p99 ms | mTLS p50 / p99 ms | added p50 / p99 ms | ratio p50 / p99 |"
             " new connection plaintext / mTLS ms",
             "------------|------------------------|-------------------|--------------------|-----------------|"
             "-----------------------------------"]
    for language, row in results["servers"].items():
        plain, mutual, new = row["plaintext"], row["mtls"], row["new_connection"]
        lines.append(f"{language:<11} | {plain['p50'] * 1e3:>10.3f} / {plain['p99'] * 1e3:<9.3f} | "
                     f"{mutual['p50'] * 1e3:>7.3f} / {mutual['p99'] * 1e3:<7.3f} | "
                     f"{row['p50_added_ms']:>+8.3f} / {row['p99_added_ms']:<+7.3f} | "
                     f"{row['p50_ratio']:>6.2f} / {row['p99_ratio']:<6.2f} | "
                     f"{new['plaintext']['p50'] * 1e3:>8.1f} / {new['mtls']['p50'] * 1e3:.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=300, help="calls per server and mode in each round")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--handshakes", type=int, default=10, help="fresh channels per server and mode")
    parser.add_argument("--languages", nargs="+", default=list(LANGUAGES), choices=LANGUAGES)
    args = parser.parse_args()
    args.languages = tuple(args.languages)
    results = run(args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    n = args.rounds * args.calls
    print(f"\nmTLS cost per unary call ({n} calls per server and mode, {args.rounds} interleaved rounds; "
          f"client grpcio)\n")
    print(table(results))
    print(f"\n{RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
