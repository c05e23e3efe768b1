"""The one way this project talks to PostgreSQL: a connection with clear errors, the tables of the shared mode, and
the identity of a writer (its backend), which tells a live writer's journal and claims from a dead one's.

Every store of a database shares these tables, keyed by the store's name, so a new store is one row and a store
name is any collection name (no SQL identifiers are built from it).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from indexes.errors import DatabaseUnavailableError, StoreError, require

SCHEMA = """
CREATE TABLE IF NOT EXISTS rag_stores (
    name TEXT PRIMARY KEY, settings TEXT NOT NULL, created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS rag_meta (
    store TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (store, key)
);
CREATE TABLE IF NOT EXISTS rag_chunks (
    store TEXT NOT NULL, id BIGINT NOT NULL, source TEXT NOT NULL, ordinal INTEGER NOT NULL, text TEXT NOT NULL,
    start INTEGER NOT NULL, "end" INTEGER NOT NULL, page INTEGER, headings TEXT NOT NULL DEFAULT '[]',
    page_end INTEGER, PRIMARY KEY (store, id)
);
CREATE INDEX IF NOT EXISTS rag_chunks_source ON rag_chunks(store, source, ordinal);
CREATE TABLE IF NOT EXISTS rag_documents (
    store TEXT NOT NULL, source TEXT NOT NULL, content_hash TEXT NOT NULL, size BIGINT NOT NULL,
    n_chunks INTEGER NOT NULL, ingested_at TEXT NOT NULL, warnings TEXT NOT NULL DEFAULT '[]',
    metadata TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (store, source)
);
CREATE TABLE IF NOT EXISTS rag_pending (
    store TEXT NOT NULL, id BIGINT NOT NULL, op TEXT NOT NULL, writer TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rag_pending_writer ON rag_pending(store, writer);
CREATE TABLE IF NOT EXISTS rag_staged (
    store TEXT NOT NULL, run TEXT NOT NULL, id BIGINT NOT NULL, source TEXT NOT NULL, ordinal INTEGER NOT NULL,
    text TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL, page INTEGER, headings TEXT NOT NULL,
    page_end INTEGER, PRIMARY KEY (store, run, id)
);
CREATE TABLE IF NOT EXISTS rag_claims (store TEXT NOT NULL, source TEXT NOT NULL, writer TEXT NOT NULL,
    PRIMARY KEY (store, source));
"""

# A backend is alive while its (pid, start time) is in pg_stat_activity; pids alone are reused.
ME = ("(pg_backend_pid()::text || '@' || "
      "(SELECT backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()))")


def alive(column: str) -> str:
    """SQL that is true when the writer named in ``column`` is still connected."""
    return f"EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid::text || '@' || a.backend_start::text = {column})"


_SCHEMA_LOCK = 7_305_011  # an advisory lock key: two processes creating the tables at once would collide


def where(url: str) -> str:
    """The database's address without its password, for messages."""
    psycopg = require("psycopg", "postgres", "psycopg[binary]")
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the --db URL"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


class Database:
    """One autocommit connection (thread-safe: statements are serialised); ``transaction`` groups statements.

    ``reconnect``: for a reader, a statement outside a transaction that finds the connection lost (a database
    restart) connects again and runs once more. A writer never does: its claims and journal belong to its backend."""

    def __init__(self, url: str, create: bool = True, reconnect: bool = False, on_connect: str = "") -> None:
        self._psycopg = require("psycopg", "postgres", "psycopg[binary]")
        if not url.startswith(("postgresql://", "postgres://")):
            raise StoreError(f"a database is a URL postgresql://USER@HOST:PORT/DBNAME, got {url!r}")
        self.url, self.reconnect, self.on_connect = url, reconnect, on_connect
        self._lock = threading.RLock()
        self._depth = 0  # transactions open on this connection
        self._conn = self._connect()
        if create and self.value("SELECT to_regclass('rag_claims')") is None:  # tables made once per database
            with self.transaction():
                self.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in filter(str.strip, SCHEMA.split(";")):
                    self.execute(statement)
        self.me = self.value(f"SELECT {ME}")

    def _connect(self):
        try:
            conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            if self.on_connect:
                conn.execute(self.on_connect)
            return conn
        except self._psycopg.Error as exc:
            raise DatabaseUnavailableError(
                f"cannot reach the database at {where(self.url)}: {str(exc).strip()}. Start PostgreSQL there, or check "
                "--db") from exc

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator["Database"]:
        """All statements inside commit together or not at all."""
        with self._lock, self._lost(), self._conn.transaction():
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1

    @contextmanager
    def _lost(self) -> Iterator[None]:
        """A lost connection as one clear error."""
        try:
            yield
        except self._psycopg.OperationalError as exc:
            if not self._conn.closed and not self._conn.broken:
                raise
            raise DatabaseUnavailableError(f"lost the connection to the database at {where(self.url)}: "
                                           f"{str(exc).strip()}") from exc

    def execute(self, sql: str, args: Sequence[Any] = ()):
        with self._lock:
            try:
                with self._lost():
                    return self._conn.execute(sql, args)
            except DatabaseUnavailableError:
                if not self.reconnect or self._depth:
                    raise
                self._conn = self._connect()
                self.me = self._conn.execute(f"SELECT {ME}").fetchone()[0]
                with self._lost():
                    return self._conn.execute(sql, args)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self._lock, self._lost(), self._conn.cursor() as cur:
            cur.executemany(sql, rows)

    def rows(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        return self.execute(sql, args).fetchall()

    def value(self, sql: str, args: Sequence[Any] = ()):
        row = self.execute(sql, args).fetchone()
        return row[0] if row else None
