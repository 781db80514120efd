"""Orders in SQLite. An order row is written (PENDING) before the saga takes anything, and
every later state is committed before the RPC answers: a crash loses no acknowledged order and
a retry with the same request id finds the saga where it stopped."""

from __future__ import annotations

import dataclasses
import time

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
    attempt INTEGER NOT NULL DEFAULT 0,  -- saga attempt; a retry after a transient failure starts the next
    status INTEGER NOT NULL,   -- the body's status, for the sweep of abandoned PENDING orders
    updated REAL NOT NULL      -- unix time of the last write
);
CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, updated);
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
                "INSERT INTO orders (id, request_id, fingerprint, body, status, updated) VALUES (?, ?, ?, ?, ?, ?)",
                (order.id, request_id, fingerprint, order.SerializeToString(), order.status, time.time()),
            )
        return OrderRecord(order, fingerprint, None)

    def save(self, order: orders_pb2.Order, error: status_pb2.Status | None = None, attempt: int | None = None) -> None:
        with self._db.transaction() as db:
            db.execute(
                "UPDATE orders SET body = ?, error = ?, attempt = COALESCE(?, attempt), status = ?, updated = ? WHERE id = ?",
                (order.SerializeToString(), error.SerializeToString() if error else None, attempt, order.status,
                 time.time(), order.id),
            )

    def stale_pending(self, older_than: float) -> list[str]:
        """Request ids of orders PENDING and untouched for `older_than` seconds."""
        rows = self._db.connection().execute(
            "SELECT request_id FROM orders WHERE status = ? AND updated < ? ORDER BY updated",
            (orders_pb2.ORDER_STATUS_PENDING, time.time() - older_than),
        )
        return [request_id for (request_id,) in rows]
