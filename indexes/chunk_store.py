"""Chunk text, metadata and the document manifest in one SQLite database.

SQLite gives the atomic commit the whole store relies on: the committed index
generation is a row here, written in the same transaction as the chunks it describes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexes.errors import StoreError
from indexes.sqlite import connect, transaction
from indexes.text import search_text
from indexes.types import Chunk

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    page INTEGER,
    headings TEXT NOT NULL DEFAULT '[]',
    page_end INTEGER
);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source, ordinal);
CREATE TABLE IF NOT EXISTS documents (
    source TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    size INTEGER NOT NULL,
    n_chunks INTEGER NOT NULL,
    ingested_at TEXT NOT NULL,
    warnings TEXT NOT NULL DEFAULT '[]',
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (id INTEGER NOT NULL, op TEXT NOT NULL);
"""
_COLUMNS = "id, source, text, start, end, page, headings, page_end"
_DOCUMENT_COLUMNS = "source, content_hash, size, n_chunks, ingested_at, warnings, metadata"


@dataclass(frozen=True)
class DocumentRecord:
    """One manifest entry: what was indexed from ``source`` and from which content."""

    source: str
    content_hash: str
    size: int
    n_chunks: int
    ingested_at: str
    warnings: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict)  # what a caller attached to a text it added (JSON); {} for files


class ChunkStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._db = connect(self.path, _SCHEMA)
            if "page_end" not in {r[1] for r in self._db.execute("PRAGMA table_info(chunks)")}:
                # stores from before chunks could cross a page break; their chunks each lie on one page
                self._db.execute("ALTER TABLE chunks ADD COLUMN page_end INTEGER")
            if "metadata" not in {r[1] for r in self._db.execute("PRAGMA table_info(documents)")}:
                # stores before add_texts
                self._db.execute("ALTER TABLE documents ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}'")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open chunk store {self.path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """All statements inside commit together or not at all."""
        return transaction(self._db)

    # -- meta -------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation", "0"))

    # -- chunks -----------------------------------------------------------
    @staticmethod
    def insert_chunks(db: sqlite3.Connection, chunks: Iterable[tuple[int, Chunk]]) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO chunks(id, source, ordinal, text, start, end, page, headings, page_end) VALUES "
            "(?,?,?,?,?,?,?,?,?)",
            [
                (
                    c.id,
                    c.source,
                    ordinal,
                    c.text,
                    c.start,
                    c.end,
                    c.page,
                    json.dumps(list(c.headings), ensure_ascii=False),
                    c.page_end,
                )
                for ordinal, c in chunks
            ],
        )

    def get(self, ids: Sequence[int]) -> dict[int, Chunk]:
        out: dict[int, Chunk] = {}
        ids = [int(i) for i in ids]
        for s in range(0, len(ids), 900):
            part = ids[s : s + 900]
            marks = ",".join("?" * len(part))
            for row in self._db.execute(f"SELECT {_COLUMNS} FROM chunks WHERE id IN ({marks})", part):
                out[row[0]] = row_to_chunk(row)
        return out

    def chunks_of(self, source: str) -> list[Chunk]:
        rows = self._db.execute(f"SELECT {_COLUMNS} FROM chunks WHERE source=? ORDER BY ordinal", (source,))
        return [row_to_chunk(r) for r in rows]

    def neighbours(self, chunk_id: int, window: int) -> list[Chunk]:
        """The chunk and up to ``window`` chunks either side of it in its document, in order."""
        row = self._db.execute("SELECT source, ordinal FROM chunks WHERE id=?", (chunk_id,)).fetchone()
        if row is None:
            return []
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM chunks WHERE source=? AND ordinal BETWEEN ? AND ? ORDER BY ordinal",
            (row[0], row[1] - window, row[1] + window),
        )
        return [row_to_chunk(r) for r in rows]

    def ids(self, source_glob: str | None = None, page_min: int | None = None,
            page_max: int | None = None) -> np.ndarray:
        where, args = [], []
        if source_glob:
            where.append("source GLOB ?")
            args.append(source_glob)
        if page_min is not None:  # a chunk is in the range when any of its pages is
            where.append("COALESCE(page_end, page) >= ?")
            args.append(page_min)
        if page_max is not None:
            where.append("page <= ?")
            args.append(page_max)
        sql = "SELECT id FROM chunks" + (" WHERE " + " AND ".join(where) if where else "")
        return np.array([r[0] for r in self._db.execute(sql, args)], dtype=np.int64)

    def ids_of_sources(self, sources: Iterable[str]) -> list[int]:
        out: list[int] = []
        for source in sources:
            out.extend(r[0] for r in self._db.execute("SELECT id FROM chunks WHERE source=?", (source,)))
        return out

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]

    def search_texts(self) -> Iterator[tuple[int, str]]:
        """(id, search text) of every chunk: what the lexical index is built from."""
        for chunk_id, headings, text in self._db.execute(
            "SELECT id, headings, text FROM chunks ORDER BY source, ordinal"
        ):
            yield chunk_id, search_text(tuple(json.loads(headings)), text)

    # -- manifest ---------------------------------------------------------
    def documents(self) -> dict[str, DocumentRecord]:
        rows = self._db.execute(f"SELECT {_DOCUMENT_COLUMNS} FROM documents")
        return {r[0]: row_to_document(r) for r in rows}

    def documents_of(self, sources: Sequence[str]) -> dict[str, DocumentRecord]:
        """The manifest records of these sources (those that are indexed)."""
        out: dict[str, DocumentRecord] = {}
        sources = list(sources)
        for s in range(0, len(sources), 900):
            part = sources[s : s + 900]
            rows = self._db.execute(
                f"SELECT {_DOCUMENT_COLUMNS} FROM documents WHERE source IN ({','.join('?' * len(part))})", part
            )
            out.update((r[0], row_to_document(r)) for r in rows)
        return out

    @staticmethod
    def upsert_document(db: sqlite3.Connection, doc: DocumentRecord) -> None:
        db.execute(
            f"INSERT OR REPLACE INTO documents({_DOCUMENT_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
            (
                doc.source,
                doc.content_hash,
                doc.size,
                doc.n_chunks,
                doc.ingested_at,
                json.dumps(list(doc.warnings), ensure_ascii=False),
                json.dumps(doc.metadata, ensure_ascii=False),
            ),
        )

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- the commit -------------------------------------------------------
    def commit_generation(self, updates: Sequence[tuple[DocumentRecord, Sequence[Chunk]]],
                          removed_sources: Sequence[str], to_remove: Sequence[int], generation: int,
                          staged_by: str | None = None) -> int:
        """In one transaction: replace the chunks of every updated source, drop the removed sources, journal
        ``to_remove`` (vector ids to delete once this commit is visible) and make ``generation`` the committed one.
        ``staged_by`` is for a shared store's Ray runs: a store directory stages nothing."""
        if staged_by is not None:
            raise StoreError("a store directory has no staged chunks: Ray actors write directly only into a shared "
                             "store (--db)")
        with self.transaction() as db:
            for source in [*(r.source for r, _ in updates), *removed_sources]:
                db.execute("DELETE FROM chunks WHERE source=?", (source,))
            for source in removed_sources:
                db.execute("DELETE FROM documents WHERE source=?", (source,))
            for record, chunks in updates:
                self.insert_chunks(db, enumerate(chunks))
                self.upsert_document(db, record)
            db.execute("DELETE FROM pending")
            db.executemany("INSERT INTO pending(id, op) VALUES (?, 'remove')", [(int(i),) for i in to_remove])
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('generation', ?)", (str(generation),))
        return generation

    # -- pending backend operations (crash recovery) ----------------------
    @contextmanager
    def committing(self) -> Iterator[None]:
        """A commit's vector writes are in flight (one writer at a time here, under the store's directory lock)."""
        yield

    @contextmanager
    def recovering(self) -> Iterator[bool]:
        yield True

    def claim(self, source: str) -> bool:
        """Whether this writer may ingest ``source``: always, as one writer holds the store's lock."""
        return True

    def release(self, sources: Sequence[str]) -> None:
        """Nothing to let go of (see ``claim``)."""

    def journal(self, ids: Sequence[int], op: str) -> None:
        """Record vector writes about to happen (``op`` add or remove), so a crash before the commit can be undone."""
        with self.transaction() as db:
            db.executemany("INSERT INTO pending(id, op) VALUES (?, ?)", [(int(i), op) for i in ids])

    def clear_journal(self) -> None:
        """This writer's journaled writes are done."""
        with self.transaction() as db:
            db.execute("DELETE FROM pending")

    def orphaned(self) -> list[tuple[int, str]]:
        """Journaled writes of writers that are gone (here, one writer at a time: all of them)."""
        return [(r[0], r[1]) for r in self._db.execute("SELECT id, op FROM pending")]

    def clear_orphaned(self) -> None:
        if self.orphaned():  # no write transaction on an open that finds nothing to do
            self.clear_journal()


def row_to_chunk(row) -> Chunk:
    return Chunk(
        id=row[0], source=row[1], text=row[2], start=row[3], end=row[4], page=row[5],
        headings=tuple(json.loads(row[6])),
        page_end=row[5] if row[7] is None else row[7],  # rows from before page ranges lie on one page
    )


def row_to_document(row) -> DocumentRecord:
    return DocumentRecord(row[0], row[1], row[2], row[3], row[4], tuple(json.loads(row[5])), json.loads(row[6]))
