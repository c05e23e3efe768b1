"""A store directory: its settings, the chunk store, the vector index, and the atomic commit.

Layout::

    store.json        embedder name and dimension, index backend and options (written once)
    chunks.sqlite     chunks, document manifest, committed generation, pending backend ops
    faiss-N.index     (or vectors-N.npz, or chroma/) the vectors of generation N

A commit writes the new index generation first and then, in one SQLite transaction,
the chunks, the manifest and the new generation number. A process killed at any point
leaves the previous generation loadable; backend writes that cannot be rolled back
(Chroma) are recorded as pending before they happen and undone or finished on the next open.
"""

from __future__ import annotations

import fcntl
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from indexes.bm25 import BM25Index
from indexes.chunk_store import ChunkStore, DocumentRecord
from indexes.errors import StoreBusyError, StoreError
from indexes.files import atomic_write
from indexes.types import Chunk, ScoredId
from indexes.vector import VectorIndex, open_index
from indexes.versions import located_model, portable_model

log = logging.getLogger(__name__)

FORMAT = 1
_SETTINGS = "store.json"


@dataclass(frozen=True)
class StoreSettings:
    """What a store was built with; fixed when the store is created."""

    embedder: str
    dim: int
    index: str = "faiss"
    index_options: dict = field(default_factory=dict)
    ingest: dict = field(default_factory=dict)
    format: int = FORMAT


@dataclass(frozen=True)
class DocumentUpdate:
    """A document to (re)index: its manifest record, its chunks and their vectors, row-aligned."""

    record: DocumentRecord
    chunks: Sequence[Chunk]
    vectors: np.ndarray


class Store:
    def __init__(self, path: Path, settings: StoreSettings, chunks: ChunkStore, index: VectorIndex,
                 read_only: bool = False) -> None:
        self.path, self.settings, self.chunks, self.index = path, settings, chunks, index
        self.read_only = read_only
        self._lexical: BM25Index | None = None
        self._lexical_generation = -1

    # -- opening ----------------------------------------------------------
    @staticmethod
    def exists(path: Path) -> bool:
        return (Path(path) / _SETTINGS).is_file()

    @classmethod
    def create(cls, path: Path, settings: StoreSettings) -> "Store":
        path = Path(path)
        if cls.exists(path):
            raise StoreError(f"a store already exists at {path}")
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path} exists and is not a directory; choose another --store path")
        path.mkdir(parents=True, exist_ok=True)
        # fail early on a bad backend
        open_index(settings.index, path, settings.dim, 0, settings.index_options, new=True)
        written = {**asdict(settings), "embedder": portable_model(settings.embedder, path)}
        atomic_write(path / _SETTINGS, lambda tmp: tmp.write_text(json.dumps(written, indent=2)))
        return cls.open(path)

    @classmethod
    def read_settings(cls, path: Path) -> StoreSettings:
        """A store's ``store.json``, checked, without opening its chunks or vectors."""
        path = Path(path)
        if not cls.exists(path):
            raise StoreError(f"no store at {path}: create one with `rag ingest DOCS --store {path}`")
        try:
            settings = StoreSettings(**json.loads((path / _SETTINGS).read_text()))
        except (ValueError, TypeError) as exc:
            raise StoreError(f"{path / _SETTINGS} is damaged: {exc}") from exc
        if settings.format != FORMAT:
            raise StoreError(f"store {path} has format {settings.format}; this version reads format {FORMAT}")
        return replace(settings, embedder=located_model(settings.embedder, path))

    @classmethod
    def open(cls, path: Path, read_only: bool = False) -> "Store":
        """Open a store. ``read_only`` is for a reader beside a writer in another process (the server): it never
        recovers, deletes other generations' files or writes the BM25 index, any of which would break the writer's
        commit."""
        path = Path(path)
        settings = cls.read_settings(path)
        chunks = ChunkStore(path / "chunks.sqlite")
        index = open_index(settings.index, path, settings.dim, chunks.generation, settings.index_options)
        store = cls(path, settings, chunks, index, read_only)
        if not read_only:
            store._recover()
        return store

    def close(self) -> None:
        self.chunks.close()
        close = getattr(self.index, "close", None)  # a client of a database (Milvus) lets go of its file or connection
        if close is not None:
            close()

    @property
    def lexical_ready(self) -> bool:
        """Whether the committed generation's BM25 index is written: an ingest's last step, so the whole ingest is
        in."""
        return self.chunks.get_meta("bm25_generation") == str(self.chunks.generation)

    @contextmanager
    def writer(self) -> Iterator[None]:
        """Hold the store's write lock: one ingest at a time."""
        if self.read_only:
            raise StoreError(f"the store {self.path} was opened read-only")
        if getattr(self.chunks, "coordinates_writers", False):  # writers claim documents in the database instead
            yield
            return
        with open(self.path / ".lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise StoreBusyError(
                    f"another process is writing to the store {self.path}; wait for it to finish"
                ) from exc
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def claim(self, source: str) -> bool:
        """Whether this writer may ingest ``source`` now (no other writer is on it); ``release`` after its commit."""
        return self.chunks.claim(source)

    def release(self, sources: Sequence[str]) -> None:
        self.chunks.release(sources)

    def _recover(self) -> None:
        """Finish or undo backend writes of a commit that was interrupted."""
        with self.chunks.recovering() as now:
            pending = self.chunks.orphaned() if now else []
            if pending:
                ids = np.array([i for i, _ in pending], dtype=np.int64)
                committed = set(self.chunks.get(ids.tolist()))
                stale = np.array([i for i in ids if int(i) not in committed], dtype=np.int64)
                log.info("recovering store %s: removing %d uncommitted vectors", self.path, len(stale))
                self.index.remove(stale)
            if now:
                self.chunks.clear_orphaned()
        self.index.drop_other_generations(self.chunks.generation)

    # -- writing ----------------------------------------------------------
    def commit(self, updates: Sequence[DocumentUpdate], removed_sources: Sequence[str] = (),
               staged_by: str | None = None) -> None:
        """Replace the chunks of every updated document, drop removed ones, atomically. ``staged_by``: the run whose
        workers wrote these chunks and their vectors already (the shared mode's Ray actors); ``updates`` then carry
        only the chunk ids."""
        replaced = [u.record.source for u in updates]
        old_ids = set(self.chunks.ids_of_sources([*replaced, *removed_sources]))
        new_ids = np.array([c.id for u in updates for c in u.chunks], dtype=np.int64)
        gone = np.array(sorted(old_ids - set(new_ids.tolist())), dtype=np.int64)
        immediate = _writes_immediately(self.index)
        generation = self.chunks.generation + 1  # a database store numbers it inside its commit transaction

        with self.chunks.committing():
            if staged_by is None:
                if immediate and len(new_ids):
                    self.chunks.journal(new_ids.tolist(), "add")
                self.index.add(new_ids, _vectors(updates, self.settings.dim))
            if not immediate:
                self.index.remove(gone)
            self.index.save(generation)
            generation = self.chunks.commit_generation([(u.record, u.chunks) for u in updates], removed_sources,
                                                       gone.tolist() if immediate else [], generation, staged_by)
            if immediate and len(gone):
                self.index.remove(gone)
            if immediate:
                self.chunks.clear_journal()
        self.index.drop_other_generations(generation)

    # -- the lexical index -------------------------------------------------
    @property
    def lexical(self) -> BM25Index:
        """The BM25 index of the committed chunks, rebuilt first if an ingest left it behind."""
        generation = self.chunks.generation
        if self._lexical is not None and self._lexical_generation == generation:
            return self._lexical
        if self.chunks.get_meta("bm25_generation") == str(generation):
            self._lexical = BM25Index.load(self.path, generation)
        else:
            self._lexical = None
        if self._lexical is None and self.read_only:
            self._lexical = BM25Index.build(self.chunks.search_texts())
        elif self._lexical is None:
            self._lexical = self.refresh_lexical()
        self._lexical_generation = generation
        return self._lexical

    def refresh_lexical(self) -> BM25Index:
        """Rebuild the BM25 index from the committed chunks and record which generation it reflects."""
        generation = self.chunks.generation
        log.info("building the BM25 index of %s (%d chunks)", self.path, self.chunks.count())
        index = BM25Index.build(self.chunks.search_texts())
        index.save(self.path, generation)
        self.chunks.set_meta("bm25_generation", str(generation))
        BM25Index.drop_other_generations(self.path, generation)
        self._lexical, self._lexical_generation = index, generation
        return index

    def lexical_search(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[Chunk, float]]:
        raw = self.lexical.search(query, k, allowed)
        found = self.chunks.get([s.id for s in raw])
        return [(found[s.id], s.score) for s in raw if s.id in found]

    # -- reading ----------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[list[tuple[Chunk, float]]]:
        """Top-``k`` committed chunks per query vector, best first."""
        raw: list[list[ScoredId]] = self.index.search(queries, k, allowed)
        found = self.chunks.get([s.id for row in raw for s in row])
        return [[(found[s.id], s.score) for s in row if s.id in found] for row in raw]

    def documents(self) -> dict[str, DocumentRecord]:
        return self.chunks.documents()

    def size_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())


def _vectors(updates: Sequence[DocumentUpdate], dim: int) -> np.ndarray:
    rows = [u.vectors for u in updates if len(u.chunks)]
    return np.vstack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)


def _writes_immediately(index: VectorIndex) -> bool:
    return bool(getattr(index, "writes_immediately", False))
