"""A real Jaeger v2 (the runner's config) on free ports, for tests that look at exported spans.

    jaeger = Jaeger(procs)             # returns once Jaeger is healthy; stopped with `procs`
    jaeger.endpoint                    # OTLP/gRPC, for OTEL_EXPORTER_OTLP_ENDPOINT
    jaeger.resource_spans(trace_id)    # what the query API holds for that trace (int or hex)
"""

from __future__ import annotations

from pathlib import Path

import httpx

from support.poll import poll_until
from support.ports import free_ports
from support.procs import Processes

__all__ = ["JAEGER_BIN", "Jaeger"]

ROOT = Path(__file__).resolve().parents[2]
JAEGER_BIN = ROOT / ".tools" / "bin" / "jaeger"


class Jaeger:
    def __init__(self, procs: Processes) -> None:
        assert JAEGER_BIN.exists(), f"{JAEGER_BIN} is missing: `make tools` builds it"
        otlp, otlp_http, query, query_grpc, health = free_ports(5)
        self.endpoint = f"http://127.0.0.1:{otlp}"
        self.query = f"http://127.0.0.1:{query}"
        self.proc = procs.start(
            "jaeger", [str(JAEGER_BIN), "--config", str(ROOT / "mesh" / "runner" / "jaeger.yaml")],
            env={"JAEGER_OTLP_GRPC_PORT": str(otlp), "JAEGER_OTLP_HTTP_PORT": str(otlp_http),
                 "JAEGER_QUERY_PORT": str(query), "JAEGER_QUERY_GRPC_PORT": str(query_grpc),
                 "JAEGER_HEALTH_PORT": str(health)},
        )
        poll_until(lambda: httpx.get(f"http://127.0.0.1:{health}/status", timeout=1).status_code == 200,
                   timeout=30, message="Jaeger healthy")

    def resource_spans(self, trace_id: int | str) -> list[dict]:
        hex_id = trace_id if isinstance(trace_id, str) else f"{trace_id:032x}"
        reply = httpx.get(f"{self.query}/api/v3/traces/{hex_id}", timeout=5)
        return reply.json()["result"]["resourceSpans"] if reply.status_code == 200 else []
