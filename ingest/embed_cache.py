"""Embeddings cached by (model, text hash), so unchanged text is never embedded twice."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


class EmbeddingCache:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (model TEXT, hash BLOB, vector BLOB, PRIMARY KEY (model, hash))")

    def embed(self, model: str, texts: Sequence[str], compute: Callable[[list[str]], np.ndarray]) -> tuple[np.ndarray, int]:
        """Vectors for ``texts`` (row-aligned) and how many had to be computed."""
        keys = [hashlib.sha256(t.encode()).digest() for t in texts]
        found: dict[bytes, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for s in range(0, len(unique), 900):
            part = unique[s : s + 900]
            rows = self._db.execute(
                f"SELECT hash, vector FROM vectors WHERE model=? AND hash IN ({','.join('?' * len(part))})", [model, *part]
            )
            found.update((h, np.frombuffer(v, np.float32)) for h, v in rows)
        todo = [k for k in unique if k not in found]
        if todo:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            vecs = compute([texts[first[k]] for k in todo])
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?,?,?)",
                                 [(model, k, v.astype(np.float32).tobytes()) for k, v in zip(todo, vecs)])
            self._db.execute("COMMIT")
            found.update(zip(todo, vecs.astype(np.float32)))
        if not keys:
            return np.zeros((0, 0), np.float32), 0
        return np.vstack([found[k] for k in keys]), len(todo)

    def close(self) -> None:
        self._db.close()
