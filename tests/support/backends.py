"""A real grpcio `shop.catalog.v1.CatalogService` that answers GetProduct with its own name as the
product name, so a client can tell which instance served each call.

    server, port = start_catalog_backend("v1")                 # in this process; server.stop(0)
    proc, port = start_catalog_backend_process(procs, "v1-a")  # its own process (one to SIGKILL),
                                                               # with grpc.health.v1 SERVING
    python -m support.backends NAME                            # what that process runs (tests/ on
                                                               # PYTHONPATH); prints {"port": N}
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

__all__ = ["CatalogBackend", "start_catalog_backend", "start_catalog_backend_process"]

TESTS = Path(__file__).resolve().parents[1]


class CatalogBackend(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, name: str) -> None:
        self.name = name

    def GetProduct(self, request, context):
        return catalog_pb2.GetProductResponse(product=catalog_pb2.Product(id=request.id, name=self.name))


def start_catalog_backend(name: str, host: str = "127.0.0.1", with_health: bool = False) -> tuple[grpc.Server, int]:
    """A started plaintext server on a free port; the caller stops it with `server.stop(0)`.
    `with_health` adds grpc.health.v1 answering SERVING (for a Consul gRPC check)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogBackend(name), server)
    if with_health:
        servicer = health.HealthServicer()
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    return server, port


def start_catalog_backend_process(procs, name: str, timeout: float = 15.0):
    """`python -m support.backends NAME` as a process of `procs` (a support.procs.Processes); returns
    (its Proc, its port) once it listens. Health (grpc.health.v1) is on the same port, SERVING."""
    pythonpath = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    proc = procs.start(f"backend-{name}", [sys.executable, "-m", "support.backends", name],
                       env={"PYTHONPATH": pythonpath})
    deadline = time.monotonic() + timeout
    while True:
        for line in proc.log_lines():
            if line.startswith('{"port"'):
                return proc, json.loads(line)["port"]
        assert proc.alive(), f"backend {name} exited:\n{proc.tail()}"
        assert time.monotonic() < deadline, f"backend {name} not listening after {timeout} s:\n{proc.tail()}"
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description="a catalog test backend answering with NAME, until SIGTERM")
    parser.add_argument("name")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    server, port = start_catalog_backend(args.name, args.host, with_health=True)
    print(json.dumps({"port": port}), flush=True)
    stopping.wait()
    server.stop(0)


if __name__ == "__main__":
    main()
