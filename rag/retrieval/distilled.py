"""The distilled reranker (``rag finetune reranker``): a few weights over the embedder's view of each candidate, fit to
the LLM judge's scores.

A candidate is described by its first-stage rank, the cosine of the question to the whole passage, and the cosines of
the question to the passage's sentences (the best one, and the mean of the best two): a passage that holds the answer
in one sentence among unrelated ones scores low as a whole but high on that sentence. The weights come from a
listwise fit to the judge's P(yes) over each training question's candidates (``rag.adapt.reranker``). Passage and
sentence vectors are kept in the student's folder (``vectors.sqlite``, filled for every chunk when it is trained), so
reranking a question costs one question embedding and a few dot products.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from indexes.errors import ConfigError
from indexes.files import atomic_write
from indexes.sqlite import connect, transaction
from ingest.embed import Embedder, SentenceTransformerEmbedder, query_time
from rag.answer.compress import units

CONFIG_FILE = "distilled.json"
VECTORS_FILE = "vectors.sqlite"
FEATURES = ("rank", "passage", "best_sentence", "best_two_sentences")


def features(rank: int, question: np.ndarray, passage: np.ndarray, sentences: np.ndarray) -> list[float]:
    """One candidate's features, in ``FEATURES`` order: -ln(first-stage rank), then cosines to the question."""
    sims = np.sort(sentences @ question) if len(sentences) else np.array([float(passage @ question)])
    return [-math.log(rank), float(passage @ question), float(sims[-1]), float(sims[-2:].mean())]


def sentences_of(text: str) -> list[str]:
    """The passage's sentences (lines for code and lists), as the prompt compressor splits them."""
    return [u.text for u in units(text, 0)]


@dataclass(frozen=True)
class StudentConfig:
    embedder: str  # the embedder whose cosines the weights were fit on
    weights: list[float]  # one per feature, in FEATURES order
    top: int  # first-stage candidates it was measured best on
    teacher: str

    def save(self, folder: Path) -> None:
        text = json.dumps({**asdict(self), "features": list(FEATURES)}, indent=2)
        atomic_write(folder / CONFIG_FILE, lambda tmp: tmp.write_text(text))

    @classmethod
    def load(cls, folder: Path) -> StudentConfig:
        data = json.loads((folder / CONFIG_FILE).read_text())
        if data.get("features") != list(FEATURES):
            raise ConfigError(f"{folder} was trained with other features ({data.get('features')}): train it again "
                              "with rag finetune reranker")
        return cls(data["embedder"], [float(w) for w in data["weights"]], int(data["top"]), data["teacher"])


class VectorCache:
    """Unit vectors of texts under one embedder, in a SQLite file (float16): computed once, read ever after. A cache
    that cannot be written (a read-only store) still serves what it holds and keeps new vectors in memory."""

    def __init__(self, path: Path, embedder: Embedder) -> None:
        self.embedder = embedder
        self._db = connect(path, "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL);")
        self._memory: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def _key(self, text: str) -> str:
        return hashlib.sha1(f"{self.embedder.name}\0{text}".encode()).hexdigest()

    def get(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        with self._lock:
            found = {k: self._memory[k] for k in keys if k in self._memory}
            ask = [k for k in dict.fromkeys(keys) if k not in found]
            for s in range(0, len(ask), 500):
                part = ask[s : s + 500]
                rows = self._db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(part))})",
                                        part).fetchall()
                found.update((k, np.frombuffer(v, dtype=np.float16).astype(np.float32)) for k, v in rows)
        todo = {k: t for k, t in zip(keys, texts) if k not in found}
        if todo:
            vectors = self.embedder.embed_documents(list(todo.values()), progress=progress)
            new = dict(zip(todo, np.asarray(vectors, dtype=np.float32)))
            found.update(new)
            self._store(new)
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)

    def _store(self, new: dict[str, np.ndarray]) -> None:
        rows = [(k, v.astype(np.float16).tobytes()) for k, v in new.items()]
        with self._lock:
            try:
                with transaction(self._db) as db:
                    db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)
            except Exception:  # noqa: BLE001 - read-only or full disk: keep them for this process
                self._memory.update(new)

    def close(self) -> None:
        self._db.close()


class DistilledReranker:
    """Scores a question's first-stage candidates (in their first-stage order) with the student's weights."""

    def __init__(self, folder: str | Path, embedder: Embedder | None = None) -> None:
        self.folder = Path(folder)
        self.config = StudentConfig.load(self.folder)
        self.name = f"distilled({self.folder.name})"
        self.weights = np.array(self.config.weights)
        if embedder is None or embedder.name != self.config.embedder:
            embedder = SentenceTransformerEmbedder(self.config.embedder)
        self.embedder = query_time(embedder)
        self.vectors = VectorCache(self.folder / VECTORS_FILE, self.embedder)

    def save(self, config: StudentConfig) -> None:
        """Score with ``config`` from now on, and keep it in the student's folder."""
        config.save(self.folder)
        self.config, self.weights = config, np.array(config.weights)

    def features(self, question: str, passages: Sequence[str]) -> np.ndarray:
        q = self.embedder.embed_query(question)
        split = [sentences_of(p) for p in passages]
        vecs = self.vectors.get([*passages, *(s for parts in split for s in parts)])
        rows, at = [], len(passages)
        for i, parts in enumerate(split):
            rows.append(features(i + 1, q, vecs[i], vecs[at : at + len(parts)]))
            at += len(parts)
        return np.array(rows, dtype=np.float64)

    def scores(self, question: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        return (self.features(question, passages) @ self.weights).tolist()

    def prepare(self, texts: Sequence[str], progress: bool = False) -> None:
        """Embed (once) the passages and sentences of ``texts``: the store's chunks, when the student is trained."""
        self.vectors.get([x for t in texts for x in (t, *sentences_of(t))], progress=progress)


def is_distilled(folder: str | Path) -> bool:
    return (Path(folder) / CONFIG_FILE).is_file()
