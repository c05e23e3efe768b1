"""Stores whose state lives in PostgreSQL (chunks, manifest, generations) with their vectors on a Milvus server, so
processes on several machines share one store: the shared mode.

A shared store is named, not placed: ``(database URL, name)``. Each process keeps what is only its own (the BM25
index it built for a generation, trained models) in a folder of its cache, so nothing is shared through a disk.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict
from pathlib import Path

from indexes.errors import ConfigError, StoreError
from indexes.files import cache_dir
from indexes.shared.chunks import PgChunkStore
from indexes.shared.database import Database, where
from indexes.store import FORMAT, Store, StoreSettings
from indexes.vector import open_index

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class NoSuchStoreError(StoreError):
    """The database holds no store of that name."""


def check_shared(name: str, settings: StoreSettings) -> None:
    """Check a new shared store's name and settings: its vectors must be on a Milvus server every machine reaches."""
    if not _NAME.match(name):
        raise ConfigError(f"a shared store's name is 1-64 letters, digits, '.', '_' or '-', got {name!r}")
    if settings.index != "milvus" or not str(settings.index_options.get("uri", "")).startswith(("http://", "https://")):
        raise ConfigError("a shared store keeps its vectors on a Milvus server that every machine reaches: add "
                          "--index milvus --uri http://HOST:PORT (`milvus-lite server` for a start)")


def milvus_collection(url: str, name: str) -> str:
    """A Milvus collection name (letters, digits, underscores) for a store, unique per database and name, so two
    databases never share one collection on a Milvus server."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return f"rag_{safe}_{hashlib.sha1(f'{where(url)}/{name}'.encode()).hexdigest()[:8]}"


def local_folder(url: str, name: str) -> Path:
    """This machine's own files of a shared store (BM25 per generation, trained models)."""
    key = hashlib.sha1(where(url).encode()).hexdigest()[:12]
    path = cache_dir() / "shared" / key / name
    path.mkdir(parents=True, exist_ok=True)
    return path


class Catalog:
    """The stores of a database, over one connection kept open (a server asks on every request)."""

    def __init__(self, url: str) -> None:
        self.db = Database(url, reconnect=True)

    def names(self) -> list[str]:
        return [r[0] for r in self.db.rows("SELECT name FROM rag_stores ORDER BY name")]

    def settings(self, name: str) -> StoreSettings | None:
        raw = self.db.value("SELECT settings FROM rag_stores WHERE name=%s", (name,))
        return None if raw is None else StoreSettings(**json.loads(raw))

    def close(self) -> None:
        self.db.close()


def names(url: str) -> list[str]:
    catalog = Catalog(url)
    try:
        return catalog.names()
    finally:
        catalog.close()


def create(url: str, name: str, settings: StoreSettings) -> Store:
    check_shared(name, settings)
    db = Database(url)
    try:
        open_index(settings.index, local_folder(url, name), settings.dim, 0, settings.index_options, new=True).close()
        with db.transaction():
            if db.value("SELECT 1 FROM rag_stores WHERE name=%s FOR UPDATE", (name,)):
                raise StoreError(f"a store named {name!r} already exists in the database at {where(url)}")
            db.execute("INSERT INTO rag_stores(name, settings, created) VALUES (%s, %s, %s)",
                       (name, json.dumps(asdict(settings)), time.time()))
            db.execute("INSERT INTO rag_meta(store, key, value) VALUES (%s, 'generation', '0')", (name,))
    finally:
        db.close()
    return open_store(url, name)


def open_store(url: str, name: str, read_only: bool = False) -> Store:
    """Open the shared store ``name``; ``read_only`` as ``Store.open`` (a reader never recovers, and reconnects after
    a database restart). Raises ``NoSuchStoreError`` when there is none."""
    db = Database(url, reconnect=read_only)
    try:
        raw = db.value("SELECT settings FROM rag_stores WHERE name=%s", (name,))
        if raw is None:
            raise NoSuchStoreError(f"no store named {name!r} in the database at {where(url)}: create it with "
                             f"`rag ingest DOCS --db URL --store {name} --index milvus --uri http://HOST:PORT`")
        settings = StoreSettings(**json.loads(raw))
        if settings.format != FORMAT:
            raise StoreError(f"store {name} has format {settings.format}; this version reads format {FORMAT}")
        chunks = PgChunkStore(db, name)
        folder = local_folder(url, name)
        index = open_index(settings.index, folder, settings.dim, chunks.generation, settings.index_options)
    except BaseException:
        db.close()
        raise
    store = Store(folder, settings, chunks, index, read_only)
    if not read_only:
        store._recover()
    return store


def drop(url: str, name: str) -> None:
    """Delete a shared store: its rows and its Milvus collection."""
    store = open_store(url, name, read_only=True)
    try:
        store.index.drop()
        with store.chunks.db.transaction() as db:
            for table in ("rag_chunks", "rag_documents", "rag_meta", "rag_pending", "rag_claims", "rag_staged"):
                db.execute(f"DELETE FROM {table} WHERE store=%s", (name,))
            db.execute("DELETE FROM rag_stores WHERE name=%s", (name,))
    finally:
        store.close()
