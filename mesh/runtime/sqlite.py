"""SQLite for the Python services: one connection per thread, WAL, durable commits.

`synchronous=FULL` makes a committed transaction survive a crash of the process or the
machine, so an RPC that answers after `transaction()` has committed never loses its write.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator

__all__ = ["Database"]


class Database:
    def __init__(self, path: str, schema: str) -> None:
        self._path = path
        self._local = threading.local()
        db = self.connection()
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(schema)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; use `transaction()` to write)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self._path, timeout=10, isolation_level=None)
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: writers queue instead of failing on a busy database."""
        db = self.connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
