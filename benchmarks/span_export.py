"""Does span export stall request handling? Latency of a traced grpcio server at a fixed rate.

    .venv/bin/python -m benchmarks.span_export                   # 1000 rps, 5 x 6 s per config
    .venv/bin/python benchmarks/span_export.py --rate 500 --duration 5 --repeats 2

One run starts a real Jaeger (.tools/bin/jaeger, mesh/runner/jaeger.yaml, free loopback ports),
then, for each repetition and each configuration (the order rotates between repetitions):
a server process (plain grpcio on 127.0.0.1:0, a trivial CatalogService.GetProduct behind the
OpenTelemetry server interceptor of `mesh.runtime.tracing.traced_server_interceptors()`), and a
load process that sends a fixed open-loop rate for a bounded time and records every call's
latency. The server is stopped with SIGTERM (its provider.shutdown() flushes), Jaeger by PID at
the end. Configurations:

- `none`:  no tracing, no interceptor (the baseline);
- `noexport`: the interceptor and SDK spans, but no span processor (the floor for any exporter);
- `sdk`:   the SDK's BatchSpanProcessor + OTLPSpanExporter in the server process (before);
- `child`: `setup_tracing()` as wired now: ChildProcessSpanProcessor, OTLP encoding in a child.

Prints p50/p90/p99/p99.9/max (median over repetitions) and each one's ratio to `none`, and writes
everything, every run included, to benchmarks/results/span_export.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JAEGER = ROOT / ".tools" / "bin" / "jaeger"
JAEGER_CONFIG = ROOT / "mesh" / "runner" / "jaeger.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "span_export.json"
CONFIGS = ("none", "noexport", "sdk", "child")
SERVER_WORKERS = 16  # as mesh.runtime.instance.BUSINESS_WORKERS
CALL_TIMEOUT = 5.0
PERCENTILES = (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9))


# -- server process ----------------------------------------------------------------------------


def serve(config: str, endpoint: str, service_name: str) -> None:
    """Serve until SIGTERM; print `PORT n` once listening and a JSON line of stats at the end."""
    import grpc
    from opentelemetry import trace

    from mesh.runtime import tracing
    from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

    provider = None
    processor = None
    if config == "noexport":
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        provider = TracerProvider(resource=Resource.create(_resource_attributes(service_name)))
        trace.set_tracer_provider(provider)
    elif config == "sdk":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create(_resource_attributes(service_name)))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
        trace.set_tracer_provider(provider)
    elif config == "child":
        from mesh.runtime.config import load_instance_config

        env = {"OTEL_SERVICE_NAME": service_name, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
               "MESH_INSTANCE_ID": f"{service_name}-1", "GRPC_XDS_BOOTSTRAP": "unused"}
        provider = tracing.setup_tracing(load_instance_config(service_name, environ=env))
        processor = provider._active_span_processor._span_processors[0]

    product = catalog_pb2.Product(id="sku-espresso-cup", name="Espresso cup")

    class Catalog(catalog_pb2_grpc.CatalogServiceServicer):
        def GetProduct(self, request, context):
            return catalog_pb2.GetProductResponse(product=product)

    interceptors = tracing.traced_server_interceptors() if provider is not None else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=SERVER_WORKERS), interceptors=interceptors)
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(Catalog(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"PORT {port}", flush=True)
    stop.wait()
    server.stop(1).wait(2)
    started = time.monotonic()
    if provider is not None:
        provider.shutdown()
    stats = {"shutdown_seconds": round(time.monotonic() - started, 3)}
    if processor is not None:
        stats["dropped_spans"] = processor.dropped_spans
    print(json.dumps(stats), flush=True)


def _resource_attributes(service_name: str) -> dict:
    return {"service.name": service_name, "service.version": "v1", "service.instance.id": f"{service_name}-1"}


# -- load process ------------------------------------------------------------------------------


def load(port: int, rate: float, duration: float, warmup: float, out: str) -> None:
    """Open loop: call i is sent at start + i/rate whatever came back; latency from its send."""
    import grpc

    from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = catalog_pb2_grpc.CatalogServiceStub(channel)
    request = catalog_pb2.GetProductRequest(id="sku-espresso-cup")
    total = int(rate * (warmup + duration))
    latencies = [math.nan] * total
    errors = [0]
    pending = [total]
    all_done = threading.Event()
    lock = threading.Lock()

    def done(index: int, sent: float, call) -> None:
        elapsed = time.perf_counter() - sent
        if call.exception() is None:
            latencies[index] = elapsed
        else:
            errors[0] += 1
        with lock:
            pending[0] -= 1
            if pending[0] == 0:
                all_done.set()

    interval = 1.0 / rate
    start = time.perf_counter() + 0.1
    worst_lag = 0.0
    for index in range(total):
        due = start + index * interval
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        sent = time.perf_counter()
        worst_lag = max(worst_lag, sent - due)
        call = stub.GetProduct.future(request, timeout=CALL_TIMEOUT)
        call.add_done_callback(lambda call, index=index, sent=sent: done(index, sent, call))
    all_done.wait(CALL_TIMEOUT + 5)
    channel.close()
    measured = [x for x in latencies[int(rate * warmup):] if not math.isnan(x)]
    Path(out).write_text(json.dumps({"latencies": measured, "errors": errors[0],
                                     "sender_worst_lag_ms": worst_lag * 1000}))


# -- orchestration -----------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _poll_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception:  # noqa: BLE001 - not yet
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def _http_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.load(reply)


class Jaeger:
    def __init__(self, workdir: Path) -> None:
        otlp, otlp_http, query, query_grpc, health = _free_ports(5)
        self.endpoint = f"http://127.0.0.1:{otlp}"
        self.query = f"http://127.0.0.1:{query}"
        self.health = f"http://127.0.0.1:{health}/status"
        env = {**os.environ, "JAEGER_OTLP_GRPC_PORT": str(otlp), "JAEGER_OTLP_HTTP_PORT": str(otlp_http),
               "JAEGER_QUERY_PORT": str(query), "JAEGER_QUERY_GRPC_PORT": str(query_grpc),
               "JAEGER_HEALTH_PORT": str(health)}
        self.log_path = workdir / "jaeger.log"
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen([str(JAEGER), "--config", str(JAEGER_CONFIG)], env=env,
                                         stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        _poll_until(lambda: urllib.request.urlopen(self.health, timeout=1).status == 200, 30, "Jaeger health")

    def services(self) -> list[str]:
        return _http_json(f"{self.query}/api/v3/services").get("services", [])

    def stop(self) -> None:
        _stop(self.proc)


def _stop(proc: subprocess.Popen, timeout: float = 15) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def _self_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.span_export", *args]


def run_once(config: str, jaeger: Jaeger, args, run_id: str, workdir: Path) -> dict:
    service_name = f"bench-{config}-{run_id}"
    server = subprocess.Popen(_self_command("serve", config, jaeger.endpoint, service_name), cwd=ROOT,
                              stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"server ({config}) did not start: {line!r}")
        port = line.split()[1]
        out = workdir / f"{service_name}.json"
        loader = subprocess.Popen(
            _self_command("load", port, str(args.rate), str(args.duration), str(args.warmup), str(out)),
            cwd=ROOT, stdin=subprocess.DEVNULL,
        )
        try:
            loader.wait(args.warmup + args.duration + CALL_TIMEOUT + 30)
        finally:
            _stop(loader)
        result = json.loads(out.read_text())
    finally:
        _stop(server, timeout=60)
    server_stats = json.loads(server.stdout.read().strip().splitlines()[-1] or "{}")
    if config not in ("none", "noexport"):
        _poll_until(lambda: service_name in jaeger.services(), 15, f"{service_name}'s spans in Jaeger")
    latencies = sorted(result["latencies"])
    summary = {name: _percentile(latencies, q) * 1000 for name, q in PERCENTILES}
    summary["max"] = latencies[-1] * 1000
    summary.update(calls=len(latencies), errors=result["errors"],
                   sender_worst_lag_ms=result["sender_worst_lag_ms"], **server_stats)
    return summary


def _percentile(ordered: list[float], q: float) -> float:
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[index]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000, help="calls per second (default 1000)")
    parser.add_argument("--duration", type=float, default=6, help="measured seconds per run (default 6)")
    parser.add_argument("--warmup", type=float, default=1, help="seconds sent first and not measured (default 1)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per configuration (default 5)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    parser.add_argument("--out", default=str(RESULTS), help="JSON results file")
    args = parser.parse_args(argv)
    configs = args.configs.split(",")
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="span-export-bench-") as tmp:
        workdir = Path(tmp)
        jaeger = Jaeger(workdir)
        try:
            for repeat in range(args.repeats):
                order = configs[repeat % len(configs):] + configs[: repeat % len(configs)]
                for config in order:
                    summary = run_once(config, jaeger, args, f"r{repeat}", workdir)
                    runs[config].append(summary)
                    print(f"  run {repeat + 1}/{args.repeats} {config:>6}: "
                          + " ".join(f"{k}={summary[k]:.2f}" for k in ("p50", "p99", "max")) + " ms", flush=True)
        finally:
            jaeger.stop()
    table = _table(runs, configs)
    print(_format(table, args))
    output = {
        "command": " ".join(["python -m benchmarks.span_export", *(argv if argv is not None else sys.argv[1:])]),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {"rate": args.rate, "duration_s": args.duration, "warmup_s": args.warmup,
                     "repeats": args.repeats, "server_workers": SERVER_WORKERS},
        "summary_ms": table, "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(output, indent=2) + "\n")
    print(f"wrote {args.out}")


def _table(runs: dict[str, list[dict]], configs: list[str]) -> dict:
    keys = [name for name, _ in PERCENTILES] + ["max"]
    table = {c: {k: statistics.median(r[k] for r in runs[c]) for k in keys} for c in configs}
    baseline = table.get("none")
    for c in configs:
        if baseline:
            table[c]["ratio"] = {k: table[c][k] / baseline[k] for k in keys}
        table[c]["dropped_spans"] = sum(r.get("dropped_spans", 0) for r in runs[c])
    return table


def _format(table: dict, args) -> str:
    keys = [name for name, _ in PERCENTILES] + ["max"]
    lines = [f"\n{args.rate:.0f} rps, {args.duration:.0f} s measured, median of {args.repeats} runs "
             "(ms; x = ratio to none)",
             f"{'config':<8}" + "".join(f"{k:>18}" for k in keys)]
    for config, row in table.items():
        cells = []
        for k in keys:
            ratio = row.get("ratio", {}).get(k)
            cells.append(f"{row[k]:>9.2f}" + (f" ({ratio:4.1f}x)" if ratio is not None else " " * 8))
        lines.append(f"{config:<8}" + "".join(f"{c:>18}" for c in cells))
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "load":
        load(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
    else:
        if __package__ in (None, ""):  # run by path: make `-m benchmarks.span_export` work below
            os.chdir(ROOT)
        main()
