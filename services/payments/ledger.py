"""The ledger: one row per charge id. Every change is one IMMEDIATE transaction, committed
before the RPC answers, so a crash never loses an acknowledged charge or refund."""

from __future__ import annotations

import sqlite3

from google.type import money_pb2

from mesh.runtime.sqlite import Database
from shop.payments.v1 import payments_pb2

SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    units INTEGER NOT NULL,
    nanos INTEGER NOT NULL,
    status INTEGER NOT NULL,
    card_token TEXT NOT NULL
)
"""


class Ledger(Database):
    def __init__(self, path: str) -> None:
        super().__init__(path, SCHEMA)

    @staticmethod
    def find(db: sqlite3.Connection, charge_id: str) -> payments_pb2.Charge | None:
        row = db.execute(
            "SELECT id, order_id, currency, units, nanos, status FROM charges WHERE id = ?", (charge_id,)
        ).fetchone()
        if row is None:
            return None
        cid, order_id, currency, units, nanos, status = row
        amount = money_pb2.Money(currency_code=currency, units=units, nanos=nanos) if currency else None
        return payments_pb2.Charge(id=cid, order_id=order_id, amount=amount, status=status)

    @staticmethod
    def insert(db: sqlite3.Connection, charge: payments_pb2.Charge, card_token: str) -> None:
        db.execute(
            "INSERT INTO charges (id, order_id, currency, units, nanos, status, card_token) VALUES (?,?,?,?,?,?,?)",
            (
                charge.id,
                charge.order_id,
                charge.amount.currency_code,
                charge.amount.units,
                charge.amount.nanos,
                charge.status,
                card_token,
            ),
        )

    @staticmethod
    def set_status(db: sqlite3.Connection, charge_id: str, status: int) -> None:
        db.execute("UPDATE charges SET status = ? WHERE id = ?", (status, charge_id))
