"""The server's own state: jobs and their files, chats and their turns, API keys.

In one SQLite file at the root, or, in the shared mode (``--db``), in PostgreSQL (schema ``rag_server``), so that
every replica behind a proxy sees the same chats, keys and jobs. Collections (stores) keep their own data; this
holds only what the server adds, so deleting it loses chat history and keys but never a document. Every write is
one transaction. The SQL is written once for both databases (``?`` placeholders, ``ON CONFLICT`` upserts).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from indexes.sqlite import connect, transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, collection TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, error TEXT NOT NULL DEFAULT '', spec TEXT NOT NULL DEFAULT '{}',
    note TEXT NOT NULL DEFAULT '', worker TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS job_files (
    job TEXT NOT NULL, name TEXT NOT NULL, source TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '', bytes INTEGER NOT NULL DEFAULT 0, pos INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, source)
);
CREATE TABLE IF NOT EXISTS chats (
    id TEXT PRIMARY KEY, collection TEXT NOT NULL, title TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS turns (
    chat TEXT NOT NULL, n INTEGER NOT NULL, question TEXT NOT NULL, standalone TEXT NOT NULL, answer TEXT NOT NULL,
    answered INTEGER NOT NULL, citations TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (chat, n)
);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, digest TEXT NOT NULL UNIQUE, scopes TEXT NOT NULL,
    collections TEXT NOT NULL, created REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0
);
"""

JOB_DONE = ("committed", "failed")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


_ADDED_COLUMNS = (("jobs", "worker", "TEXT NOT NULL DEFAULT ''"), ("job_files", "pos", "INTEGER NOT NULL DEFAULT 0"))


class _Postgres:
    """The few calls ``ServerDB`` makes of a SQLite connection, on PostgreSQL (``?`` placeholders become ``%s``)."""

    def __init__(self, url: str) -> None:
        from indexes.shared.database import Database

        self.db = Database(url, create=False, reconnect=True, on_connect="SET search_path TO rag_server")
        with self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(7305013)")  # replicas starting together
            self.db.execute("CREATE SCHEMA IF NOT EXISTS rag_server")
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self.db.execute(statement.replace(" REAL", " DOUBLE PRECISION").replace(" INTEGER", " BIGINT"))
            # an upload's bytes until its job has run, so that any replica can run it
            self.db.execute("CREATE TABLE IF NOT EXISTS uploads (job TEXT NOT NULL, name TEXT NOT NULL, "
                            "data BYTEA NOT NULL, PRIMARY KEY (job, name))")

    def execute(self, sql: str, args: tuple = ()):
        return self.db.execute(sql.replace("?", "%s"), args)

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        self.db.executemany(sql.replace("?", "%s"), rows)

    def rows(self, sql: str, args: tuple) -> list[dict]:
        cursor = self.execute(sql, args)
        names = [c.name for c in cursor.description]
        return [dict(zip(names, r)) for r in cursor.fetchall()]

    @contextmanager
    def transaction(self) -> Iterator["_Postgres"]:
        with self.db.transaction():
            yield self

    def close(self) -> None:
        self.db.close()


class ServerDB:
    FILE = "_server.sqlite"

    def __init__(self, root: Path, url: str | None = None) -> None:
        """The state of the server at ``root``: in its SQLite file, or in the PostgreSQL database ``url``."""
        self.path = Path(root) / self.FILE
        self.shared = url is not None
        self._lock = threading.RLock()
        if url is not None:
            self._pg: _Postgres | None = _Postgres(url)
            return
        self._pg = None
        self._db = connect(self.path, _SCHEMA)
        self._db.row_factory = sqlite3.Row
        for table, column, kind in _ADDED_COLUMNS:  # files written before these columns existed
            if column not in {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    @property
    def worker(self) -> str:
        """Who claims jobs: this replica's database backend, alive while its connection is ("" for one server)."""
        return self._pg.db.me if self._pg is not None else ""

    def close(self) -> None:
        (self._pg or self._db).close()

    @contextmanager
    def tx(self):
        if self._pg is not None:
            with self._lock, self._pg.transaction() as db:
                yield db
            return
        with self._lock, transaction(self._db) as db:
            yield db

    def rows(self, sql: str, args: tuple = ()) -> list[dict]:
        with self._lock:
            if self._pg is not None:
                return self._pg.rows(sql, args)
            return [dict(r) for r in self._db.execute(sql, args)]

    # -- jobs ------------------------------------------------------------
    def add_job(self, collection: str, kind: str, files: list[tuple[str, str, int]], spec: dict,
                uploads: dict[str, bytes] | None = None) -> str:
        """``files``: (display name, source path, bytes); ``uploads``: their bytes by name (a shared database keeps
        them with the job, in the same transaction)."""
        job, now = new_id("job"), time.time()
        with self.tx() as db:
            db.execute("INSERT INTO jobs(id, collection, kind, status, created, updated, spec) VALUES (?,?,?,?,?,?,?)",
                       (job, collection, kind, "queued", now, now, json.dumps(spec)))
            db.executemany(
                "INSERT INTO job_files(job, name, source, status, bytes, pos) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT (job, source) DO UPDATE SET name=excluded.name, bytes=excluded.bytes",
                [(job, n, s, "queued", b, pos) for pos, (n, s, b) in enumerate(files)])
            if uploads:
                db.executemany("INSERT INTO uploads(job, name, data) VALUES (?,?,?)",
                               [(job, name, data) for name, data in uploads.items()])
        return job

    def claim_job(self, job: str) -> bool:
        """Take a queued job for this server: only one replica's claim succeeds."""
        with self.tx() as db:
            return db.execute("UPDATE jobs SET status='running', worker=?, updated=? WHERE id=? AND status='queued'",
                              (self.worker, time.time(), job)).rowcount == 1

    def orphaned_jobs(self) -> list[dict]:
        """Unfinished jobs that no running server is working on: queued ones, and running ones whose server is gone
        (every running one, for a single server starting up)."""
        if self._pg is None:
            return self.jobs(unfinished=True)
        from indexes.shared.database import alive

        rows = self.rows("SELECT id FROM jobs WHERE status='queued' OR (status='running' AND NOT "
                         f"{alive('worker')}) ORDER BY created")
        return [self.job(r["id"]) for r in rows]

    def upload(self, job: str, name: str) -> bytes | None:
        """An uploaded file's bytes kept with its job (a shared database only)."""
        rows = self.rows("SELECT data FROM uploads WHERE job=? AND name=?", (job, name)) if self.shared else []
        return bytes(rows[0]["data"]) if rows else None

    def drop_uploads(self, job: str) -> None:
        if self.shared:
            with self.tx() as db:
                db.execute("DELETE FROM uploads WHERE job=?", (job,))

    def set_job(self, job: str, status: str, error: str = "") -> None:
        with self.tx() as db:
            db.execute("UPDATE jobs SET status=?, error=?, updated=? WHERE id=?", (status, error, time.time(), job))

    def note_job(self, job: str, note: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE jobs SET note=? WHERE id=?", (note, job))

    def set_file(self, job: str, source: str, status: str, reason: str = "") -> None:
        with self.tx() as db:
            db.execute(
                "UPDATE job_files SET status=?, reason=? WHERE job=? AND source=?", (status, reason, job, source)
            )
            db.execute("UPDATE jobs SET updated=? WHERE id=?", (time.time(), job))

    def job(self, job: str, internal: bool = False) -> dict | None:
        """A job with its files; ``internal`` adds its spec (where its uploads are staged), which the API never
        shows."""
        found = self.rows("SELECT * FROM jobs WHERE id=?", (job,))
        if not found:
            return None
        out = found[0]
        spec = json.loads(out.pop("spec"))
        if internal:
            out["spec"] = spec
        out["files"] = self.rows(
            "SELECT name, source, status, reason, bytes FROM job_files WHERE job=? ORDER BY pos, name", (job,)
        )
        return out

    def jobs(self, collection: str | None = None, unfinished: bool = False) -> list[dict]:
        sql, args = "SELECT id FROM jobs WHERE 1=1", []
        if collection is not None:
            sql, args = sql + " AND collection=?", [*args, collection]
        if unfinished:
            sql += " AND status NOT IN ('committed', 'failed')"
        return [self.job(r["id"]) for r in self.rows(sql + " ORDER BY created", tuple(args))]

    # -- chats -----------------------------------------------------------
    def add_chat(self, collection: str, title: str, owner: str) -> str:
        chat, now = new_id("chat"), time.time()
        with self.tx() as db:
            db.execute(
                "INSERT INTO chats(id, collection, title, created, updated, owner) VALUES (?,?,?,?,?,?)",
                (chat, collection, title, now, now, owner),
            )
        return chat

    def chat(self, chat: str) -> dict | None:
        found = self.rows("SELECT * FROM chats WHERE id=?", (chat,))
        if not found:
            return None
        out = found[0]
        out["turns"] = [
            t | {"citations": json.loads(t["citations"]), "answered": bool(t["answered"])}
            for t in self.rows("SELECT * FROM turns WHERE chat=? ORDER BY n", (chat,))
        ]
        return out

    def chats(self, owner: str | None = None, unowned: bool = False) -> list[dict]:
        """Every chat (``owner`` None), or one key's; ``unowned`` adds those made before keys existed."""
        if owner is None:
            return self.rows("SELECT * FROM chats ORDER BY updated DESC")
        return self.rows(
            "SELECT * FROM chats WHERE owner=? OR (? AND owner='') ORDER BY updated DESC", (owner, unowned)
        )

    def add_turn(self, chat: str, question: str, standalone: str, answer: str, answered: bool,
                 citations: list[dict]) -> None:
        now = time.time()
        with self.tx() as db:
            n = db.execute("SELECT COALESCE(MAX(n), 0) + 1 FROM turns WHERE chat=?", (chat,)).fetchone()[0]
            db.execute(
                "INSERT INTO turns(chat, n, question, standalone, answer, answered, citations, created) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (chat, n, question, standalone, answer, int(answered), json.dumps(citations, ensure_ascii=False), now),
            )
            db.execute("UPDATE chats SET updated=? WHERE id=?", (now, chat))

    def set_title(self, chat: str, title: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE chats SET title=? WHERE id=?", (title, chat))

    def delete_chat(self, chat: str) -> bool:
        with self.tx() as db:
            db.execute("DELETE FROM turns WHERE chat=?", (chat,))
            return db.execute("DELETE FROM chats WHERE id=?", (chat,)).rowcount > 0

    # -- keys ------------------------------------------------------------
    def add_key(self, name: str, digest: str, scopes: list[str], collections: list[str]) -> str:
        key_id = new_id("key")
        with self.tx() as db:
            db.execute(
                "INSERT INTO keys(id, name, digest, scopes, collections, created) VALUES (?,?,?,?,?,?)",
                (key_id, name, digest, json.dumps(scopes), json.dumps(collections), time.time()),
            )
        return key_id

    def key_by_digest(self, digest: str) -> dict | None:
        found = self.rows("SELECT * FROM keys WHERE digest=? AND revoked=0", (digest,))
        return (
            (found[0] | {"scopes": json.loads(found[0]["scopes"]), "collections": json.loads(found[0]["collections"])})
            if found
            else None
        )

    def keys(self) -> list[dict]:
        return [
            r | {"scopes": json.loads(r["scopes"]), "collections": json.loads(r["collections"])}
            for r in self.rows("SELECT id, name, scopes, collections, created, revoked FROM keys ORDER BY created")
        ]

    def revoke_key(self, key_id: str) -> bool:
        with self.tx() as db:
            return db.execute("UPDATE keys SET revoked=1 WHERE id=?", (key_id,)).rowcount > 0

    def keys_enabled(self) -> bool:
        """Whether keys are required: once a key was created, even if all were revoked since (revoking the last key
        must not open the server)."""
        return bool(self.rows("SELECT 1 FROM keys LIMIT 1"))
