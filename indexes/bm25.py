"""Lexical index: BM25 (bm25s, sparse matrices) over chunk search text, one directory per generation.

bm25s indexes are immutable, so the index is rebuilt from the chunk store after an ingest
(seconds for 100k chunks); the store records which chunk generation it reflects, and a stale
index is rebuilt before use.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from indexes.errors import require
from indexes.text import tokenize
from indexes.types import ScoredId

log = logging.getLogger(__name__)

_DIR = "bm25-{}"


def _bm25s():
    bm25s = require("bm25s", None)
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it sets DEBUG on import, which floods any handler
    return bm25s


class BM25Index:
    def __init__(self, retriever, ids: np.ndarray) -> None:
        self._retriever, self._ids = retriever, ids
        self._row = {int(i): r for r, i in enumerate(ids)}

    @classmethod
    def build(cls, texts: Iterable[tuple[int, str]]) -> "BM25Index":
        bm25s = _bm25s()
        ids, tokens = [], []
        for chunk_id, text in texts:
            ids.append(chunk_id)
            tokens.append(tokenize(text))
        retriever = bm25s.BM25()
        if tokens:
            retriever.index(tokens, show_progress=False)
        return cls(retriever, np.array(ids, dtype=np.int64))

    @classmethod
    def load(cls, directory: Path, generation: int) -> "BM25Index | None":
        path = Path(directory) / _DIR.format(generation)
        if not (path / "ids.npy").exists():
            return None
        bm25s = _bm25s()
        ids = np.load(path / "ids.npy", allow_pickle=False)
        retriever = bm25s.BM25.load(str(path), show_progress=False) if len(ids) else bm25s.BM25()
        return cls(retriever, ids)

    def save(self, directory: Path, generation: int) -> None:
        """Write to a temporary directory, then rename: a crash leaves no half-written generation."""
        final = Path(directory) / _DIR.format(generation)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if len(self._ids):
            self._retriever.save(str(tmp), show_progress=False)
        np.save(tmp / "ids.npy", self._ids, allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps({"chunks": len(self._ids)}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)

    @staticmethod
    def drop_other_generations(directory: Path, keep: int) -> None:
        for path in Path(directory).glob("bm25-*"):
            if path.name != _DIR.format(keep):
                shutil.rmtree(path, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._ids)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[ScoredId]:
        tokens = tokenize(query)
        if not tokens or not len(self._ids) or k <= 0:
            return []
        mask = None
        if allowed is not None:
            mask = np.zeros(len(self._ids), dtype=np.float32)
            rows = [self._row[int(i)] for i in allowed if int(i) in self._row]
            if not rows:
                return []
            mask[rows] = 1.0
        known = (
            [t for t in tokens if t in self._retriever.vocab_dict] if hasattr(self._retriever, "vocab_dict") else tokens
        )
        if not known:
            return []
        docs, scores = self._retriever.retrieve(
            [known], k=min(k, len(self._ids)), show_progress=False, weight_mask=mask, n_threads=1
        )
        return [ScoredId(int(self._ids[d]), float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]
