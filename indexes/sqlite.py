"""The one way this project opens a SQLite file and commits to it (the chunk store and the server's own state)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode with WAL and ``synchronous=FULL`` (a committed write survives a power cut),
    creating ``schema``'s tables if absent; usable from any thread (callers serialise writes)."""
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """All statements inside commit together or not at all; the write lock is taken at the start (IMMEDIATE), so
    two writers wait for each other instead of failing halfway."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
