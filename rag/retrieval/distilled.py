"""The distilled reranker (``rag finetune reranker``): a few weights over the embedder's view of each candidate, fit to
the LLM judge's scores.

A candidate is described by its first-stage rank, the cosine of the question to the whole passage, the cosines of
the question to the passage's sentences (the best one, and the mean of the best two): a passage that holds the answer
in one sentence among unrelated ones scores low as a whole but high on that sentence; and late interaction (each
question token's best cosine to the passage's tokens, averaged, as ColBERT scores): the words of the question found in
the passage, in context. The weights come from a listwise fit to the judge's P(yes) over each training question's
candidates (``rag.adapt.reranker``). Passage, sentence and token vectors are kept in the student's folder
(``vectors.sqlite``, filled for every chunk when it is trained; tokens only for stores up to ``TOKEN_CHUNKS`` chunks,
as they take about 160 KB a chunk), so reranking a question costs two question embeddings and a few products.
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
from indexes.versions import located_model, portable_model
from ingest.embed import Embedder, SentenceTransformerEmbedder, query_time
from rag.answer.compress import units

CONFIG_FILE = "distilled.json"
VECTORS_FILE = "vectors.sqlite"
FEATURES = ("rank", "passage", "best_sentence", "best_two_sentences", "late_interaction")
TOKEN_CHUNKS = 5000  # stores up to this size get token vectors (and late interaction): ~160 KB a chunk in float16


def features(rank: int, question: np.ndarray, passage: np.ndarray, sentences: np.ndarray,
             late: float = 0.0) -> list[float]:
    """One candidate's features, in ``FEATURES`` order: -ln(first-stage rank), cosines to the question, and late
    interaction (``late_interaction``)."""
    sims = np.sort(sentences @ question) if len(sentences) else np.array([float(passage @ question)])
    return [-math.log(rank), float(passage @ question), float(sims[-1]), float(sims[-2:].mean()), late]


def late_interaction(question: np.ndarray, passage: np.ndarray) -> float:
    """Each question token's best cosine to a passage token, averaged (both unit rows)."""
    return float((question @ passage.T).max(1).mean()) if len(question) and len(passage) else 0.0


def sentences_of(text: str) -> list[str]:
    """The passage's sentences (lines for code and lists), as the prompt compressor splits them."""
    return [u.text for u in units(text, 0)]


@dataclass(frozen=True)
class StudentConfig:
    embedder: str  # the embedder whose cosines the weights were fit on
    weights: list[float]  # one per feature, in ``features`` order
    top: int  # first-stage candidates it was measured best on
    teacher: str
    features: tuple[str, ...] = FEATURES  # a student trained before late interaction has the first four

    def save(self, folder: Path) -> None:
        text = json.dumps({**asdict(self), "embedder": portable_model(self.embedder, folder),
                           "features": list(self.features)}, indent=2)
        atomic_write(folder / CONFIG_FILE, lambda tmp: tmp.write_text(text))

    @classmethod
    def load(cls, folder: Path) -> StudentConfig:
        data = json.loads((folder / CONFIG_FILE).read_text())
        names = tuple(data.get("features") or ())
        if not names or names != FEATURES[: len(names)] or len(names) != len(data["weights"]):
            raise ConfigError(f"{folder} was trained with other features ({list(names)}): train it again "
                              "with rag finetune reranker")
        return cls(located_model(data["embedder"], folder), [float(w) for w in data["weights"]], int(data["top"]),
                   data["teacher"], names)


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


class TokenCache:
    """Token vectors of passages under one embedder (float16 matrices) in the student's SQLite file, as
    ``VectorCache`` keeps unit vectors; unusable (and late interaction off) for an embedder without token vectors."""

    def __init__(self, path: Path, embedder: Embedder) -> None:
        self.embedder = embedder
        self.usable = hasattr(embedder, "embed_tokens")
        self._db = connect(path, "CREATE TABLE IF NOT EXISTS tokens (key TEXT PRIMARY KEY, n INTEGER NOT NULL, "
                                 "vec BLOB NOT NULL);")
        self._memory: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def get(self, texts: Sequence[str], progress: bool = False) -> list[np.ndarray]:
        keys = [hashlib.sha1(f"{self.embedder.name}\0tokens\0{t}".encode()).hexdigest() for t in texts]
        with self._lock:
            found = {k: self._memory[k] for k in keys if k in self._memory}
            for k in dict.fromkeys(k for k in keys if k not in found):
                row = self._db.execute("SELECT n, vec FROM tokens WHERE key=?", (k,)).fetchone()
                if row is not None:
                    found[k] = np.frombuffer(row[1], dtype=np.float16).astype(np.float32).reshape(row[0], -1)
        todo = {k: t for k, t in zip(keys, texts) if k not in found}
        if todo:
            from tqdm.auto import tqdm

            new: dict[str, np.ndarray] = {}
            items = list(todo.items())
            for s in tqdm(range(0, len(items), 64), desc="token vectors", unit="batch", disable=not progress):
                part = items[s : s + 64]
                new.update(zip((k for k, _ in part), self.embedder.embed_tokens([t for _, t in part], query=False)))
            found.update(new)
            self._store(new)
        return [found[k] for k in keys]

    def _store(self, new: dict[str, np.ndarray]) -> None:
        rows = [(k, len(v), v.astype(np.float16).tobytes()) for k, v in new.items()]
        with self._lock:
            try:
                with transaction(self._db) as db:
                    db.executemany("INSERT OR REPLACE INTO tokens VALUES (?, ?, ?)", rows)
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
        self.tokens = TokenCache(self.folder / VECTORS_FILE, self.embedder)

    def save(self, config: StudentConfig) -> None:
        """Score with ``config`` from now on, and keep it in the student's folder."""
        config.save(self.folder)
        self.config, self.weights = config, np.array(config.weights)

    def features(self, question: str, passages: Sequence[str]) -> np.ndarray:
        """The candidates' features, those this student was trained with."""
        q = self.embedder.embed_query(question)
        split = [sentences_of(p) for p in passages]
        vecs = self.vectors.get([*passages, *(s for parts in split for s in parts)])
        late = [0.0] * len(passages)
        if "late_interaction" in self.config.features and self.tokens.usable:
            q_tokens = self.embedder.embed_tokens([question], query=True)[0]
            late = [late_interaction(q_tokens, p) for p in self.tokens.get(passages)]
        rows, at = [], len(passages)
        for i, parts in enumerate(split):
            rows.append(features(i + 1, q, vecs[i], vecs[at : at + len(parts)], late[i]))
            at += len(parts)
        return np.array(rows, dtype=np.float64)[:, : len(self.config.features)]

    def scores(self, question: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        return (self.features(question, passages) @ self.weights).tolist()

    def prepare(self, texts: Sequence[str], progress: bool = False, tokens: bool = True) -> None:
        """Embed (once) the passages and sentences of ``texts`` (the store's chunks, when the student is trained),
        and with ``tokens`` their token vectors."""
        self.vectors.get([x for t in texts for x in (t, *sentences_of(t))], progress=progress)
        if tokens and self.tokens.usable:
            self.tokens.get(texts, progress=progress)


def is_distilled(folder: str | Path) -> bool:
    return (Path(folder) / CONFIG_FILE).is_file()
