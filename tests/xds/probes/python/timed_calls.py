"""A raw grpcio xDS client (no runtime, no interceptor): calls shop.catalog.v1.CatalogService/GetProduct
on an xds:/// target and prints one JSON line per call: {"code": "OK" | "DEADLINE_EXCEEDED" | ...,
"ms": elapsed}. Calls carry no deadline of their own unless --timeout is given.

usage: GRPC_XDS_BOOTSTRAP=bootstrap.json python timed_calls.py --target xds:///NAME:PORT [--calls 3] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import time

import grpc

from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=None)
    args = parser.parse_args()
    with grpc.insecure_channel(args.target) as channel:
        stub = catalog_pb2_grpc.CatalogServiceStub(channel)
        for _ in range(args.calls):
            started = time.monotonic()
            try:
                stub.GetProduct(catalog_pb2.GetProductRequest(id="timed"), timeout=args.timeout, wait_for_ready=True)
                code = "OK"
            except grpc.RpcError as error:
                code = error.code().name
            print(json.dumps({"code": code, "ms": round((time.monotonic() - started) * 1000, 1)}), flush=True)


if __name__ == "__main__":
    main()
