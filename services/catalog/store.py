"""Products in SQLite, seeded from seed.json on first start (never over live rows)."""

from __future__ import annotations

import json
import pathlib

from google.protobuf import json_format

from mesh.runtime.sqlite import Database
from shop.catalog.v1 import catalog_pb2

SEED = pathlib.Path(__file__).with_name("seed.json")
SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id TEXT PRIMARY KEY,
    body BLOB NOT NULL  -- shop.catalog.v1.Product, binary protobuf
)
"""


class ProductStore:
    def __init__(self, path: str) -> None:
        self._db = Database(path, SCHEMA)
        with self._db.transaction() as db:
            for item in json.loads(SEED.read_text()):
                product = json_format.ParseDict(item, catalog_pb2.Product())
                db.execute(
                    "INSERT OR IGNORE INTO products (id, body) VALUES (?, ?)",
                    (product.id, product.SerializeToString()),
                )

    def page(self, after_id: str, limit: int) -> list[catalog_pb2.Product]:
        rows = self._db.connection().execute(
            "SELECT body FROM products WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )
        return [catalog_pb2.Product.FromString(body) for (body,) in rows]

    def get_many(self, ids: list[str]) -> dict[str, catalog_pb2.Product]:
        unique = sorted(set(ids))
        marks = ",".join("?" * len(unique))
        rows = self._db.connection().execute(f"SELECT body FROM products WHERE id IN ({marks})", unique)
        products = (catalog_pb2.Product.FromString(body) for (body,) in rows)
        return {p.id: p for p in products}
