"""A real grpcio `shop.catalog.v1.CatalogService` that answers GetProduct with its own name as the
product name, so a client can tell which instance served each call."""

from __future__ import annotations

from concurrent import futures

import grpc
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

__all__ = ["CatalogBackend", "start_catalog_backend"]


class CatalogBackend(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, name: str) -> None:
        self.name = name

    def GetProduct(self, request, context):
        return catalog_pb2.GetProductResponse(product=catalog_pb2.Product(id=request.id, name=self.name))


def start_catalog_backend(name: str, host: str = "127.0.0.1") -> tuple[grpc.Server, int]:
    """A started plaintext server on a free port; the caller stops it with `server.stop(0)`."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogBackend(name), server)
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    return server, port
