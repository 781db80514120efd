"""Calls shop.catalog.v1.CatalogService/GetProduct on an xds:/// target over and over and prints one
JSON line per call: {"t": <unix seconds>, "backend": "<product name>"} or {"t": ..., "error": "..."}.
The test backends answer with their own id as the product name.

usage: GRPC_XDS_BOOTSTRAP=bootstrap.json python probe.py --target xds:///NAME:PORT [--interval-ms 10]
       [--header NAME=VALUE ...]  (metadata sent with every call)
"""

from __future__ import annotations

import argparse
import json
import signal
import time

import grpc
import grpc.experimental  # needed for insecure_channel_credentials()

from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

running = True


def stop(*_):
    global running
    running = False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--interval-ms", type=float, default=10)
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    metadata = tuple(tuple(header.split("=", 1)) for header in args.header)
    credentials = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())
    with grpc.secure_channel(args.target, credentials) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        while running:
            try:
                response = stub.GetProduct(catalog_pb2.GetProductRequest(id="probe"), timeout=1, metadata=metadata)
                line = {"t": time.time(), "backend": response.product.name}
            except grpc.RpcError as error:
                line = {"t": time.time(), "error": f"{error.code().name}: {error.details()}"}
            print(json.dumps(line), flush=True)
            time.sleep(args.interval_ms / 1000)


if __name__ == "__main__":
    main()
