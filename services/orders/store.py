"""Orders in SQLite. An order row is written (PENDING) before the saga takes anything, and
every later state is committed before the RPC answers: a crash loses no acknowledged order and
a retry with the same request id finds the saga where it stopped.

Every order has an owner (`user_id`, the gateway's token subject) and request ids are unique per
owner: one user's key never finds another's order. Orders stored before owners existed are
migrated with the empty owner, which no caller has, so nobody can read them."""

from __future__ import annotations

import dataclasses
import time

from google.rpc import status_pb2

from mesh.runtime.sqlite import Database
from shop.orders.v1 import orders_pb2

TABLE = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,     -- the owner: only they read it, and their request ids are theirs
    request_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    body BLOB NOT NULL,        -- shop.orders.v1.Order
    error BLOB,                -- google.rpc.Status of a failed order, replayed to retries
    attempt INTEGER NOT NULL DEFAULT 0,  -- saga attempt; a retry after a transient failure starts the next
    status INTEGER NOT NULL,   -- the body's status, for the sweep of abandoned PENDING orders
    updated REAL NOT NULL,     -- unix time of the last write
    UNIQUE (user_id, request_id)
)"""
INDEX = "CREATE INDEX IF NOT EXISTS orders_by_status ON orders (status, updated)"
SCHEMA = f"{TABLE};\n{INDEX};\n"


@dataclasses.dataclass
class OrderRecord:
    order: orders_pb2.Order
    fingerprint: str
    error: status_pb2.Status | None
    attempt: int = 0


COLUMNS = "id, user_id, request_id, fingerprint, body, error, attempt, status, updated"


class OrderStore:
    def __init__(self, path: str) -> None:
        self._db = Database(path, SCHEMA)
        self._add_owners()

    def _add_owners(self) -> None:
        """A table from before owners (request ids unique across users): rebuilt with the
        empty owner on every old order, in one transaction."""
        columns = {row[1] for row in self._db.connection().execute("PRAGMA table_info(orders)")}
        if "user_id" in columns:
            return
        with self._db.transaction() as db:
            db.execute("ALTER TABLE orders RENAME TO orders_without_owners")
            db.execute("DROP INDEX IF EXISTS orders_by_status")
            db.execute(TABLE)
            db.execute(INDEX)
            db.execute(f"INSERT INTO orders ({COLUMNS}) SELECT id, '', request_id, fingerprint, body, error, attempt, "
                       "status, updated FROM orders_without_owners")
            db.execute("DROP TABLE orders_without_owners")

    @staticmethod
    def _record(row) -> OrderRecord:
        body, fingerprint, error, attempt = row
        return OrderRecord(
            orders_pb2.Order.FromString(body), fingerprint, status_pb2.Status.FromString(error) if error else None,
            attempt,
        )

    def by_request(self, user_id: str, request_id: str) -> OrderRecord | None:
        row = self._db.connection().execute(
            "SELECT body, fingerprint, error, attempt FROM orders WHERE user_id = ? AND request_id = ?",
            (user_id, request_id),
        ).fetchone()
        return self._record(row) if row else None

    def get(self, order_id: str, user_id: str) -> orders_pb2.Order | None:
        """The order if `user_id` owns it; None when it does not exist or is another user's."""
        row = self._db.connection().execute(
            "SELECT body, fingerprint, error, attempt FROM orders WHERE id = ? AND user_id = ?", (order_id, user_id)
        ).fetchone()
        return self._record(row).order if row else None

    def create(self, order: orders_pb2.Order, request_id: str, fingerprint: str) -> OrderRecord:
        """Insert a new order (its owner is `order.user_id`), or return the one a concurrent
        request of the same owner with the same request id inserted first."""
        with self._db.transaction() as db:
            row = db.execute("SELECT body, fingerprint, error, attempt FROM orders WHERE user_id = ? AND request_id = ?",
                             (order.user_id, request_id)).fetchone()
            if row:
                return self._record(row)
            db.execute(
                "INSERT INTO orders (id, user_id, request_id, fingerprint, body, status, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (order.id, order.user_id, request_id, fingerprint, order.SerializeToString(), order.status, time.time()),
            )
        return OrderRecord(order, fingerprint, None)

    def save(self, order: orders_pb2.Order, error: status_pb2.Status | None = None, attempt: int | None = None) -> None:
        with self._db.transaction() as db:
            db.execute(
                "UPDATE orders SET body = ?, error = ?, attempt = COALESCE(?, attempt), status = ?, updated = ? WHERE id = ?",
                (order.SerializeToString(), error.SerializeToString() if error else None, attempt, order.status,
                 time.time(), order.id),
            )

    def stale_pending(self, older_than: float) -> list[tuple[str, str]]:
        """(user id, request id) of the orders PENDING and untouched for `older_than` seconds."""
        rows = self._db.connection().execute(
            "SELECT user_id, request_id FROM orders WHERE status = ? AND updated < ? ORDER BY updated",
            (orders_pb2.ORDER_STATUS_PENDING, time.time() - older_than),
        )
        return [(user_id, request_id) for user_id, request_id in rows]
