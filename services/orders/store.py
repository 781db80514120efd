"""Orders in SQLite. An order row is written (PENDING) before the saga takes anything, and
every later state is committed before the RPC answers: a crash loses no acknowledged order and
a retry with the same request id finds the saga where it stopped."""

from __future__ import annotations

import dataclasses

from google.rpc import status_pb2

from mesh.runtime.sqlite import Database
from shop.orders.v1 import orders_pb2

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    body BLOB NOT NULL,        -- shop.orders.v1.Order
    error BLOB,                -- google.rpc.Status of a failed order, replayed to retries
    attempt INTEGER NOT NULL DEFAULT 0  -- saga attempt; a retry after a transient failure starts the next
)
"""


@dataclasses.dataclass
class OrderRecord:
    order: orders_pb2.Order
    fingerprint: str
    error: status_pb2.Status | None
    attempt: int = 0


class OrderStore:
    def __init__(self, path: str) -> None:
        self._db = Database(path, SCHEMA)
        columns = {row[1] for row in self._db.connection().execute("PRAGMA table_info(orders)")}
        if "attempt" not in columns:  # a database from before saga attempts
            self._db.connection().execute("ALTER TABLE orders ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0")

    @staticmethod
    def _record(row) -> OrderRecord:
        body, fingerprint, error, attempt = row
        return OrderRecord(
            orders_pb2.Order.FromString(body), fingerprint, status_pb2.Status.FromString(error) if error else None,
            attempt,
        )

    def by_request(self, request_id: str) -> OrderRecord | None:
        row = self._db.connection().execute(
            "SELECT body, fingerprint, error, attempt FROM orders WHERE request_id = ?", (request_id,)
        ).fetchone()
        return self._record(row) if row else None

    def get(self, order_id: str) -> orders_pb2.Order | None:
        row = self._db.connection().execute("SELECT body, fingerprint, error, attempt FROM orders WHERE id = ?", (order_id,)).fetchone()
        return self._record(row).order if row else None

    def create(self, order: orders_pb2.Order, request_id: str, fingerprint: str) -> OrderRecord:
        """Insert a new order, or return the one a concurrent request inserted first."""
        with self._db.transaction() as db:
            row = db.execute("SELECT body, fingerprint, error, attempt FROM orders WHERE request_id = ?", (request_id,)).fetchone()
            if row:
                return self._record(row)
            db.execute(
                "INSERT INTO orders (id, request_id, fingerprint, body) VALUES (?, ?, ?, ?)",
                (order.id, request_id, fingerprint, order.SerializeToString()),
            )
        return OrderRecord(order, fingerprint, None)

    def save(self, order: orders_pb2.Order, error: status_pb2.Status | None = None, attempt: int | None = None) -> None:
        with self._db.transaction() as db:
            db.execute(
                "UPDATE orders SET body = ?, error = ?, attempt = COALESCE(?, attempt) WHERE id = ?",
                (order.SerializeToString(), error.SerializeToString() if error else None, attempt, order.id),
            )
