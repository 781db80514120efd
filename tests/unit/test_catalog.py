import grpc
import pytest
from google.rpc import error_details_pb2

from mesh.runtime.errors import details_of
from services.catalog.servicer import CatalogServicer
from services.catalog.store import ProductStore
from shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc


@pytest.fixture
def catalog(serve, tmp_path):
    servicer = CatalogServicer(ProductStore(str(tmp_path / "catalog.db")))
    return catalog_pb2_grpc.CatalogServiceStub(serve(catalog_pb2_grpc.add_CatalogServiceServicer_to_server, servicer))


def test_pages_cover_the_seeded_dozen_once_each(catalog):
    seen, token = [], ""
    while True:
        page = catalog.ListProducts(catalog_pb2.ListProductsRequest(page_size=5, page_token=token))
        seen += [p.id for p in page.products]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 12 and len(set(seen)) == 12 and seen == sorted(seen)
    assert all(p.price_usd.currency_code == "USD" for p in catalog.ListProducts(catalog_pb2.ListProductsRequest()).products)


def test_a_bad_page_token_and_negative_size_are_both_reported(catalog):
    with pytest.raises(grpc.RpcError) as caught:
        catalog.ListProducts(catalog_pb2.ListProductsRequest(page_size=-1, page_token="garbage!"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (bad_request,) = details_of(caught.value)
    assert {v.field for v in bad_request.field_violations} == {"page_size", "page_token"}


def test_batch_get_names_every_unknown_product(catalog):
    with pytest.raises(grpc.RpcError) as caught:
        catalog.BatchGetProducts(catalog_pb2.BatchGetProductsRequest(ids=["sku-kettle", "nope-1", "nope-2"]))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    (info,) = details_of(caught.value)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "UNKNOWN_PRODUCT" and info.metadata["resource_ids"] == "nope-1,nope-2"


def test_batch_get_answers_in_request_order_with_duplicates(catalog):
    reply = catalog.BatchGetProducts(catalog_pb2.BatchGetProductsRequest(ids=["sku-tamper", "sku-kettle", "sku-tamper"]))
    assert [p.id for p in reply.products] == ["sku-tamper", "sku-kettle", "sku-tamper"]
    assert reply.products[1].price_usd.units == 69


def test_restart_keeps_data_and_does_not_reseed_over_it(tmp_path):
    path = str(tmp_path / "c.db")
    ProductStore(path)
    again = ProductStore(path)
    assert len(again.page("", 100)) == 12
