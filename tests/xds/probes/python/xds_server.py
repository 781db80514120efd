"""An xDS-managed grpcio server (`grpc.server(..., xds=True)`) serving CatalogService with its name
as the product name. It serves only once the control plane has sent its server listener.

usage: GRPC_XDS_BOOTSTRAP=bootstrap.json python xds_server.py --port PORT --name NAME
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # tests/, for `support`
from shop.catalog.v1 import catalog_pb2_grpc
from support.backends import CatalogBackend


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), xds=True)
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogBackend(args.name), server)
    credentials = grpc.xds_server_credentials(grpc.insecure_server_credentials())
    server.add_secure_port(f"127.0.0.1:{args.port}", credentials)
    server.start()
    print(f"started xDS-managed server on 127.0.0.1:{args.port}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    server.stop(1).wait()


if __name__ == "__main__":
    main()
