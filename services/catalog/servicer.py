"""CatalogService: list, get and batch-get products."""

from __future__ import annotations

import base64
import binascii
import os

from mesh.runtime.config import InstanceConfig
from mesh.runtime.errors import invalid_argument, not_found
from mesh.runtime.instance import Servicer
from services.catalog.store import ProductStore
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

DOMAIN = "catalog.shop.local"
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
MAX_BATCH = 100


def encode_page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(f"after:{last_id}".encode()).decode()


def decode_page_token(token: str) -> str | None:
    """The id a page starts after, or None when the token was not made by us."""
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return text.removeprefix("after:") if text.startswith("after:") else None


class CatalogServicer(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, store: ProductStore) -> None:
        self._store = store

    def ListProducts(self, request, context):
        violations = []
        if request.page_size < 0:
            violations.append(("page_size", "must not be negative"))
        after = ""
        if request.page_token:
            after = decode_page_token(request.page_token)
            if after is None:
                violations.append(("page_token", "not a token returned by ListProducts"))
        if violations:
            raise invalid_argument(violations)
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        # One extra row tells whether another page exists without a second query.
        rows = self._store.page(after, size + 1)
        page, more = rows[:size], len(rows) > size
        return catalog_pb2.ListProductsResponse(
            products=page, next_page_token=encode_page_token(page[-1].id) if more else ""
        )

    def GetProduct(self, request, context):
        if not request.id:
            raise invalid_argument([("id", "required")])
        found = self._store.get_many([request.id])
        if request.id not in found:
            raise not_found(f"product {request.id!r} not found", "UNKNOWN_PRODUCT", DOMAIN, [request.id])
        return catalog_pb2.GetProductResponse(product=found[request.id])

    def BatchGetProducts(self, request, context):
        violations = [(f"ids[{i}]", "required") for i, pid in enumerate(request.ids) if not pid]
        if not request.ids:
            violations.append(("ids", "at least one id is required"))
        if len(request.ids) > MAX_BATCH:
            violations.append(("ids", f"at most {MAX_BATCH} ids"))
        if violations:
            raise invalid_argument(violations)
        found = self._store.get_many(list(request.ids))
        missing = [pid for pid in dict.fromkeys(request.ids) if pid not in found]
        if missing:
            raise not_found(
                f"unknown products: {', '.join(missing)}", "UNKNOWN_PRODUCT", DOMAIN, missing
            )
        return catalog_pb2.BatchGetProductsResponse(products=[found[pid] for pid in request.ids])


def make_servicers(config: InstanceConfig, settings: object) -> list[Servicer]:
    servicer = CatalogServicer(ProductStore(os.path.join(config.data_dir, "catalog.db")))
    return [Servicer.of(catalog_pb2, "CatalogService", catalog_pb2_grpc.add_CatalogServiceServicer_to_server, servicer)]
