"""Embeddings cached by (model, text hash), so unchanged text is never embedded twice; each vector records when
it was last used, so vectors of old models and of text no store holds any more can be pruned by age."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


class EmbeddingCache:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT, hash BLOB, vector BLOB, used REAL NOT NULL DEFAULT 0, "
            "PRIMARY KEY (model, hash))"
        )
        if not self._has_ages():  # a cache from before ages: they start now, not in 1970
            self._db.execute("BEGIN IMMEDIATE")
            if not self._has_ages():  # another process may have added them meanwhile
                self._db.execute("ALTER TABLE vectors ADD COLUMN used REAL NOT NULL DEFAULT 0")
                self._db.execute("UPDATE vectors SET used=?", (time.time(),))
            self._db.execute("COMMIT")
        self.path = Path(path)

    def _has_ages(self) -> bool:
        return "used" in {row[1] for row in self._db.execute("PRAGMA table_info(vectors)")}

    def embed(self, model: str, texts: Sequence[str],
              compute: Callable[[list[str]], np.ndarray]) -> tuple[np.ndarray, int]:
        """Vectors for ``texts`` (row-aligned) and how many had to be computed."""
        if not texts:
            return np.zeros((0, 0), np.float32), 0
        keys = [hashlib.sha256(t.encode()).digest() for t in texts]
        found: dict[bytes, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for s in range(0, len(unique), 900):
            part = unique[s : s + 900]
            rows = self._db.execute(
                f"SELECT hash, vector FROM vectors WHERE model=? AND hash IN ({','.join('?' * len(part))})",
                [model, *part],
            )
            found.update((h, np.frombuffer(v, np.float32)) for h, v in rows)
        todo = [k for k in unique if k not in found]
        vecs = None
        if todo:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            vecs = compute([texts[first[k]] for k in todo]).astype(np.float32)
            found.update(zip(todo, vecs))
        now = time.time()
        self._db.execute("BEGIN")
        new = set(todo)
        hits = [k for k in unique if k not in new]
        for s in range(0, len(hits), 900):
            part = hits[s : s + 900]
            self._db.execute(
                f"UPDATE vectors SET used=? WHERE model=? AND hash IN ({','.join('?' * len(part))})",
                [now, model, *part],
            )
        if vecs is not None:
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?,?,?,?)",
                [(model, k, v.tobytes(), now) for k, v in zip(todo, vecs)],
            )
        self._db.execute("COMMIT")
        return np.vstack([found[k] for k in keys]), len(todo)

    def models(self) -> list[tuple[str, int, float]]:
        """(model key, vectors, last used as a Unix time) for each model in the cache, most recently used first."""
        return list(
            self._db.execute("SELECT model, COUNT(*), MAX(used) FROM vectors GROUP BY model ORDER BY MAX(used) DESC")
        )

    def prune(self, older_than_days: float) -> int:
        """Delete vectors not used for ``older_than_days`` and give their space back; returns how many went."""
        gone = self._db.execute("DELETE FROM vectors WHERE used < ?", (time.time() - older_than_days * 86400,)).rowcount
        self._db.execute("VACUUM")
        return gone

    def close(self) -> None:
        self._db.close()
