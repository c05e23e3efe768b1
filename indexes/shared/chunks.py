"""The chunk store of the shared mode: the same calls as ``indexes.chunk_store.ChunkStore``, on PostgreSQL.

Several writers on several machines may work on one store at once. Each document is claimed before it is read
(a row in ``rag_claims`` naming the writer's backend), so two writers never ingest the same file; a commit takes
the store's generation row for update, so commits are numbered one after another and each becomes visible in one
transaction. Journaled vector writes carry their writer too: recovery undoes only those of writers that are gone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from indexes.chunk_store import DocumentRecord, row_to_chunk, row_to_document
from indexes.shared.database import Database, alive, where
from indexes.text import search_text
from indexes.types import Chunk

_COLUMNS = 'id, source, text, start, "end", page, headings, page_end'
_UPDATE = ('source=EXCLUDED.source, ordinal=EXCLUDED.ordinal, text=EXCLUDED.text, start=EXCLUDED.start, '
           '"end"=EXCLUDED."end", page=EXCLUDED.page, headings=EXCLUDED.headings, page_end=EXCLUDED.page_end')
_LOCK_CLASS = 7_305_012  # advisory locks of a store: (this, hashtext(store name))
_DOCUMENT_COLUMNS = "source, content_hash, size, n_chunks, ingested_at, warnings, metadata"


def glob_regex(pattern: str) -> str:
    """A SQLite GLOB (``*``, ``?``, ``[...]``; case-sensitive, ``*`` crosses ``/``) as an anchored POSIX regex."""
    out, i = ["^"], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out) + "$"


def _row(ordinal: int, c: Chunk) -> tuple:
    return (ordinal, c.id, c.source, c.text, c.start, c.end, c.page, json.dumps(list(c.headings), ensure_ascii=False),
            c.page_end)


class PgChunkStore:
    coordinates_writers = True  # writers on other machines are expected: claims and row locks, no directory lock

    def __init__(self, db: Database, store: str) -> None:
        self.db, self.store = db, store

    @property
    def location(self) -> str:
        """Where the store is, for people: its name and database (without a password)."""
        return f"{self.store} in the database at {where(self.db.url)}"

    def close(self) -> None:
        self.db.close()

    # -- meta -------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        value = self.db.value("SELECT value FROM rag_meta WHERE store=%s AND key=%s", (self.store, key))
        return default if value is None else value

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO rag_meta(store, key, value) VALUES (%s, %s, %s) "
            "ON CONFLICT (store, key) DO UPDATE SET value=EXCLUDED.value", (self.store, key, value))

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation", "0"))

    # -- chunks -----------------------------------------------------------
    def _insert_chunks(self, chunks: Iterable[tuple[int, Chunk]]) -> None:
        self.db.executemany(
            f"INSERT INTO rag_chunks(store, ordinal, {_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
            f"ON CONFLICT (store, id) DO UPDATE SET {_UPDATE}", [(self.store, *_row(o, c)) for o, c in chunks])

    def stage(self, run: str, chunks: Iterable[tuple[int, Chunk]]) -> None:
        """Keep chunks written by a worker of ``run`` (a Ray actor) until that run's driver commits them."""
        self.db.executemany(
            f"INSERT INTO rag_staged(store, run, ordinal, {_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (store, run, id) DO NOTHING", [(self.store, run, *_row(o, c)) for o, c in chunks])

    def get(self, ids: Sequence[int]) -> dict[int, Chunk]:
        ids = [int(i) for i in ids]
        if not ids:
            return {}
        rows = self.db.rows(f"SELECT {_COLUMNS} FROM rag_chunks WHERE store=%s AND id = ANY(%s)", (self.store, ids))
        return {r[0]: row_to_chunk(r) for r in rows}

    def chunks_of(self, source: str) -> list[Chunk]:
        rows = self.db.rows(f"SELECT {_COLUMNS} FROM rag_chunks WHERE store=%s AND source=%s ORDER BY ordinal",
                            (self.store, source))
        return [row_to_chunk(r) for r in rows]

    def neighbours(self, chunk_id: int, window: int) -> list[Chunk]:
        found = self.db.rows("SELECT source, ordinal FROM rag_chunks WHERE store=%s AND id=%s",
                             (self.store, int(chunk_id)))
        if not found:
            return []
        source, ordinal = found[0]
        rows = self.db.rows(
            f"SELECT {_COLUMNS} FROM rag_chunks WHERE store=%s AND source=%s AND ordinal BETWEEN %s AND %s "
            "ORDER BY ordinal", (self.store, source, ordinal - window, ordinal + window))
        return [row_to_chunk(r) for r in rows]

    def ids(self, source_glob: str | None = None, page_min: int | None = None,
            page_max: int | None = None) -> np.ndarray:
        sql, args = "SELECT id FROM rag_chunks WHERE store=%s", [self.store]
        if source_glob:
            sql, args = sql + " AND source ~ %s", [*args, glob_regex(source_glob)]
        if page_min is not None:  # a chunk is in the range when any of its pages is
            sql, args = sql + " AND COALESCE(page_end, page) >= %s", [*args, page_min]
        if page_max is not None:
            sql, args = sql + " AND page <= %s", [*args, page_max]
        return np.array([r[0] for r in self.db.rows(sql, args)], dtype=np.int64)

    def ids_of_sources(self, sources: Iterable[str]) -> list[int]:
        sources = list(sources)
        if not sources:
            return []
        return [r[0] for r in self.db.rows("SELECT id FROM rag_chunks WHERE store=%s AND source = ANY(%s)",
                                           (self.store, sources))]

    def count(self) -> int:
        return int(self.db.value("SELECT COUNT(*) FROM rag_chunks WHERE store=%s", (self.store,)))

    def search_texts(self) -> Iterator[tuple[int, str]]:
        """(id, search text) of every chunk: what the lexical index is built from."""
        rows = self.db.rows("SELECT id, headings, text FROM rag_chunks WHERE store=%s ORDER BY source, ordinal",
                            (self.store,))
        for chunk_id, headings, text in rows:
            yield chunk_id, search_text(tuple(json.loads(headings)), text)

    # -- manifest ---------------------------------------------------------
    def documents(self) -> dict[str, DocumentRecord]:
        rows = self.db.rows(f"SELECT {_DOCUMENT_COLUMNS} FROM rag_documents WHERE store=%s", (self.store,))
        return {r[0]: row_to_document(r) for r in rows}

    def documents_of(self, sources: Sequence[str]) -> dict[str, DocumentRecord]:
        rows = self.db.rows(f"SELECT {_DOCUMENT_COLUMNS} FROM rag_documents WHERE store=%s AND source = ANY(%s)",
                            (self.store, list(sources)))
        return {r[0]: row_to_document(r) for r in rows}

    def _upsert_document(self, doc: DocumentRecord) -> None:
        self.db.execute(
            f"INSERT INTO rag_documents(store, {_DOCUMENT_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (store, source) DO UPDATE SET content_hash=EXCLUDED.content_hash, size=EXCLUDED.size, "
            "n_chunks=EXCLUDED.n_chunks, ingested_at=EXCLUDED.ingested_at, warnings=EXCLUDED.warnings, "
            "metadata=EXCLUDED.metadata",
            (self.store, doc.source, doc.content_hash, doc.size, doc.n_chunks, doc.ingested_at,
             json.dumps(list(doc.warnings), ensure_ascii=False), json.dumps(doc.metadata, ensure_ascii=False)),
        )

    # -- the commit -------------------------------------------------------
    def commit_generation(self, updates: Sequence[tuple[DocumentRecord, Sequence[Chunk]]],
                          removed_sources: Sequence[str], to_remove: Sequence[int], generation: int,
                          staged_by: str | None = None) -> int:
        """As ``ChunkStore.commit_generation``; the generation is the next one at commit time (``generation`` is
        only this writer's guess: another writer may have committed since). ``staged_by``: the updates' chunks
        were staged by the workers of that run (``stage``), and are moved from there."""
        with self.db.transaction() as db:
            generation = int(db.value(
                "UPDATE rag_meta SET value=(value::bigint + 1)::text WHERE store=%s AND key='generation' "
                "RETURNING value", (self.store,)))
            sources = [*(r.source for r, _ in updates), *removed_sources]
            db.execute("DELETE FROM rag_chunks WHERE store=%s AND source = ANY(%s)", (self.store, sources))
            db.execute("DELETE FROM rag_documents WHERE store=%s AND source = ANY(%s)",
                       (self.store, list(removed_sources)))
            for record, chunks in updates:
                if staged_by is None:
                    self._insert_chunks(enumerate(chunks))
                self._upsert_document(record)
            if staged_by is not None:
                moved = [r.source for r, _ in updates]
                db.execute(f"INSERT INTO rag_chunks(store, ordinal, {_COLUMNS}) SELECT store, ordinal, {_COLUMNS} "
                           f"FROM rag_staged WHERE store=%s AND run=%s AND source = ANY(%s) "
                           f"ON CONFLICT (store, id) DO UPDATE SET {_UPDATE}", (self.store, staged_by, moved))
                db.execute("DELETE FROM rag_staged WHERE store=%s AND run=%s AND source = ANY(%s)",
                           (self.store, staged_by, moved))
            db.execute("DELETE FROM rag_pending WHERE store=%s AND writer=%s", (self.store, db.me))
            db.executemany("INSERT INTO rag_pending(store, id, op, writer) VALUES (%s, %s, 'remove', %s)",
                           [(self.store, int(i), db.me) for i in to_remove])
        return generation

    # -- claims: one writer per document ------------------------------------
    def claim(self, source: str) -> bool:
        """Whether this writer may ingest ``source`` now: no other live writer holds it."""
        row = self.db.rows(
            "INSERT INTO rag_claims(store, source, writer) VALUES (%s, %s, %s) ON CONFLICT (store, source) DO UPDATE "
            f"SET writer=EXCLUDED.writer WHERE rag_claims.writer=EXCLUDED.writer OR NOT {alive('rag_claims.writer')} "
            "RETURNING 1", (self.store, source, self.db.me))
        return bool(row)

    def release(self, sources: Sequence[str]) -> None:
        self.db.execute("DELETE FROM rag_claims WHERE store=%s AND source = ANY(%s) AND writer=%s",
                        (self.store, list(sources), self.db.me))

    # -- pending backend operations (crash recovery) ----------------------
    @contextmanager
    def committing(self) -> Iterator[None]:
        """Held from a commit's first journaled vector write to its last: recovery never runs beside it."""
        key = (_LOCK_CLASS, self.store)
        self.db.execute("SELECT pg_advisory_lock_shared(%s, hashtext(%s))", key)
        try:
            yield
        finally:
            self.db.execute("SELECT pg_advisory_unlock_shared(%s, hashtext(%s))", key)

    @contextmanager
    def recovering(self) -> Iterator[bool]:
        """Whether this process may undo dead writers' journaled writes now (no commit is in flight anywhere)."""
        key = (_LOCK_CLASS, self.store)
        got = bool(self.db.value("SELECT pg_try_advisory_lock(%s, hashtext(%s))", key))
        try:
            yield got
        finally:
            if got:
                self.db.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", key)

    def journal(self, ids: Sequence[int], op: str) -> None:
        self.db.executemany("INSERT INTO rag_pending(store, id, op, writer) VALUES (%s, %s, %s, %s)",
                            [(self.store, int(i), op, self.db.me) for i in ids])

    def clear_journal(self) -> None:
        self.db.execute("DELETE FROM rag_pending WHERE store=%s AND writer=%s", (self.store, self.db.me))

    def orphaned(self) -> list[tuple[int, str]]:
        """Journaled writes of writers that are no longer connected."""
        return [(r[0], r[1]) for r in self.db.rows(
            f"SELECT id, op FROM rag_pending p WHERE store=%s AND NOT {alive('p.writer')}", (self.store,))]

    def clear_orphaned(self) -> None:
        """Forget dead writers' journals, and the chunks their Ray workers staged for a commit that never came."""
        self.db.execute(f"DELETE FROM rag_pending p WHERE store=%s AND NOT {alive('p.writer')}", (self.store,))
        self.db.execute(f"DELETE FROM rag_staged s WHERE store=%s AND NOT {alive('s.run')}", (self.store,))
